//! Privilege separation, as OpenSSH does it: the process that talks to the gateway holds
//! no capability, and a tiny privileged half, a separate systemd service (`rig-agent
//! privileged`), runs smartctl for the disks the config monitors and reads the kernel log,
//! and nothing else, answering over a Unix socket.
//!
//! Two units rather than a fork at start: a network process without capabilities could
//! not start the privileged half again after it died, and a privileged parent's death
//! would take the connection down with it. systemd restarts either half alone.
//!
//! - [`crate::privileged_client::wire`]: the closed request set and the answers, strictly
//!   parsed and size-capped (beside the agent's side of the socket, which speaks it too).
//! - [`server`]: the privileged half's loop; [`budget`], its request slots, kernel log
//!   streams and throttled refusals.
//! - [`crate::privileged_client::smartctl`]: running smartctl, for either half.
//! - [`kmsg`]: the kernel log, streamed to the network half: whole only the records it
//!   acts on (`crate::kernel_log::needed`), which `/dev/kmsg` under
//!   `kernel.dmesg_restrict=1` keeps from its user.
//! - [`crate::privileged_client`]: the network half's side, used by
//!   [`crate::probes::smart::SmartReader`] and the kernel log job.

mod budget;
pub(crate) mod kmsg;
pub mod server;
