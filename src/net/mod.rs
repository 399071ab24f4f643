//! The network layer: the DNS/TCP/TLS/upgrade under one deadline (transport), the RFC 6455
//! upgrade (upgrade), the byte stream under the WebSocket (stream) and the WebSocket frame
//! helpers. The gateway URL and the rustls client config it connects with are the config's
//! (`config::url`, `config::tls`): they are refused or built at load.

pub mod connection;
pub mod frames;
pub mod stream;
pub mod transport;
pub mod upgrade;
