//! Integration tests: the real server, in-process on loopback (or as a process where a test kills
//! it), driven by matrix-sdk and by raw HTTP.

mod common;

mod account_data;
mod accounts;
mod directory;
mod email;
mod errors;
mod presence;
mod process;
mod receipts;
mod rooms;
mod sdk;
mod sdk_live;
mod sync;
mod to_device;
mod tokens;
mod totp;
mod upgrade;
