//! The network layer: the DNS/TCP/TLS/upgrade under one deadline (transport), the RFC 6455
//! upgrade (upgrade), the byte stream under the WebSocket (stream) and the WebSocket frame
//! helpers; and for an update's download, one TCP dial (dial) and a small HTTP GET
//! (http_get). The gateway URL and the rustls client config it connects with are the config's
//! (`config::url`, `config::tls`): they are refused or built at load.

pub mod connection;
pub mod dial;
pub mod frames;
pub mod http_get;
pub mod stream;
pub mod transport;
pub mod upgrade;
