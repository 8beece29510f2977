//! `roost-bench`: load scenarios against any Matrix homeserver, spoken to over the
//! Client-Server API only.
