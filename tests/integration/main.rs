//! Integration tests: the real server, in-process on loopback (or as a process where a test kills
//! it), driven by matrix-sdk and by raw HTTP.

mod child;
mod common;

mod account_data;
mod accounts;
mod bad_input;
mod bench;
mod chat_accounts;
mod chat_calls;
mod chat_common;
mod chat_groups;
mod chat_messages;
mod chat_notifications;
mod chat_openapi;
mod chat_spec;
mod chat_story;
mod chat_ws;
mod directory;
mod e2ee;
mod email;
mod errors;
mod fuzz_smoke;
mod keys;
mod media;
mod presence;
mod process;
mod push;
mod receipts;
mod relations;
mod reliability;
mod reports;
mod rooms;
mod sdk;
mod sdk_live;
mod search;
mod spaces;
mod sync;
mod to_device;
mod tokens;
mod totp;
mod upgrade;
mod user_directory;
