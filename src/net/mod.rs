//! The network layer: the rustls configuration, the DNS/TCP/TLS/upgrade
//! under one deadline (transport), the RFC 6455 upgrade (upgrade), the byte stream under the
//! WebSocket (stream) and the WebSocket frame helpers.

pub mod connection;
pub mod frames;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod upgrade;
