//! The query catalogue: act name → probe → `data` (PROTOCOL.md §6). [`answers`] builds
//! each `data` from the probes' readers and the disk monitor's verdicts.
//!
//! Each entry names the lane it runs in: fast probes (reading /proc, agent state) share one
//! worker thread; probes that may take seconds (smartctl over many disks) get their own, so
//! a slow one never delays a fast one, and neither ever delays a heartbeat.

pub mod answers;
pub(crate) mod workers;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::Value;

use crate::protocol::{Query, Refusal};
use crate::queries::answers::Probes;
use crate::status::AgentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Fast = 0,
    Slow = 1,
}

pub(crate) const LANES: [Lane; 2] = [Lane::Fast, Lane::Slow];

/// The acts of [`Catalogue::standard`], sorted, for `--help` (which has no config to build the
/// catalogue from). A test keeps the two the same.
pub const STANDARD_ACTS: [&str; 9] = [
    "get_agent_info",
    "get_board_health",
    "get_disk_info",
    "get_fans",
    "get_gpu_info",
    "get_network_info",
    "get_system_baseinfo",
    "get_system_status",
    "get_temperature",
];

/// A probe: the query (for parameters) in, `data` or a refusal out.
pub type Probe = Arc<dyn Fn(&Query) -> Result<Value, Refusal> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Catalogue {
    entries: HashMap<String, (Lane, Probe)>,
}

impl Catalogue {
    pub fn new() -> Catalogue {
        Catalogue::default()
    }

    /// Every query of PROTOCOL.md §6, answered by `probes`.
    pub fn standard(probes: Arc<Probes>, status: Arc<AgentStatus>) -> Catalogue {
        let mut c = Catalogue::new();
        c.add("get_agent_info", Lane::Fast, move |_| Ok(status.agent_info()));
        let p = Arc::clone(&probes);
        c.add("get_system_baseinfo", Lane::Fast, move |_| Ok(p.system_baseinfo()));
        let p = Arc::clone(&probes);
        c.add("get_system_status", Lane::Fast, move |_| Ok(p.system_status()));
        let p = Arc::clone(&probes);
        c.add("get_network_info", Lane::Fast, move |_| p.network_info());
        let p = Arc::clone(&probes);
        c.add("get_temperature", Lane::Fast, move |_| Ok(p.temperature()));
        let p = Arc::clone(&probes);
        c.add("get_fans", Lane::Fast, move |_| Ok(p.fans()));
        let p = Arc::clone(&probes);
        c.add("get_board_health", Lane::Fast, move |_| Ok(p.board_health()));
        // nvidia-smi takes 50-500 ms, seconds with a GPU in trouble: the slow lane.
        let p = Arc::clone(&probes);
        c.add("get_gpu_info", Lane::Slow, move |_| Ok(p.gpu_info()));
        // smartctl over many disks can take seconds: its own lane.
        c.add("get_disk_info", Lane::Slow, move |_| probes.disk_info());
        c
    }

    pub fn add(
        &mut self,
        act: &str,
        lane: Lane,
        probe: impl Fn(&Query) -> Result<Value, Refusal> + Send + Sync + 'static,
    ) {
        self.entries.insert(act.to_string(), (lane, Arc::new(probe)));
    }

    /// The lane of `act`, or `None` for an act this agent does not know (answer code 1).
    pub fn lane(&self, act: &str) -> Option<Lane> {
        self.entries.get(act).map(|(lane, _)| *lane)
    }

    pub fn acts(&self) -> Vec<&str> {
        let mut acts: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        acts.sort_unstable();
        acts
    }

    /// Runs the probe for `query`. A probe that panics is answered as failed (code 3) and
    /// the agent goes on.
    pub fn run(&self, query: &Query) -> Result<Value, Refusal> {
        let act = &query.echo.act;
        let Some((_, probe)) = self.entries.get(act) else { return Err(Refusal::unknown_act(act)) };
        match catch_unwind(AssertUnwindSafe(|| probe(query))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                log::error!("probe {act} panicked: {what}");
                Err(Refusal::probe_failed(format!("probe {act} failed: internal error ({what})")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Inbound, decode};

    fn query(act: &str) -> Query {
        let Ok(Inbound::Query(q)) = decode(&format!(r#"{{"act":"{act}"}}"#)) else { panic!() };
        q
    }

    #[test]
    fn an_unknown_act_is_refused_with_code_1() {
        let c = Catalogue::new();
        assert_eq!(c.run(&query("nope")).unwrap_err().code, 1);
        assert_eq!(c.lane("nope"), None);
    }

    #[test]
    fn a_panicking_probe_answers_code_3_naming_the_probe() {
        let mut c = Catalogue::new();
        c.add("get_boom", Lane::Fast, |_| panic!("sensor exploded"));
        let r = c.run(&query("get_boom")).unwrap_err();
        assert_eq!(r.code, 3);
        assert!(r.description.contains("get_boom") && r.description.contains("sensor exploded"), "{r:?}");
    }

    #[test]
    fn the_standard_catalogue_has_every_query_of_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::tests::minimal_config(dir.path());
        let c = Catalogue::standard(Arc::new(Probes::from_config(&cfg)), Arc::new(AgentStatus::new("/x.toml".into())));
        let v = c.run(&query("get_agent_info")).unwrap();
        assert_eq!(v["version"], crate::version());
        assert_eq!(c.acts(), STANDARD_ACTS);
        assert_eq!(c.lane("get_disk_info"), Some(Lane::Slow));
        assert_eq!(c.lane("get_gpu_info"), Some(Lane::Slow));
    }
}
