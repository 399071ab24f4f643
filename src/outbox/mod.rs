//! The durable outbox: the spool of warnings and action results (fsync, atomic rename), and
//! the resend window that sends unacked entries after each login.

pub mod resend;
pub mod spool;
