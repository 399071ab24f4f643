//! GPU failures: the GPU inventory kept across restarts, the pure rules that turn what the
//! monitor sees of the GPUs into failure conditions, and the verdicts and Xid counts the
//! queries read. The monitor thread that applies them is `monitor`; the kernel records it
//! hears of are recognised in `kernel_log::gpu_error`.

pub mod health;
pub mod inventory;
pub mod rules;
