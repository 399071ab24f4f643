//! SMART's predictive indicators, parsed from smartctl's JSON: the raw values of the ATA
//! attributes whose rise precedes failure, and the NVMe health log's fields. The SMART
//! reader fills them in; the disk monitor's predictive rules (`disks::predictive`) judge
//! them against the baseline the inventory remembers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The ATA attributes whose raw value rising precedes failure, with their meaning.
pub const ATA_WATCHED: [(u64, &str); 5] = [
    (5, "reallocated sectors"),
    (187, "reported uncorrectable errors"),
    (188, "command timeouts"),
    (197, "current pending sectors"),
    (198, "offline uncorrectable sectors"),
];

/// The NVMe health log fields that matter (smartctl's `nvme_smart_health_information_log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmeHealth {
    pub critical_warning: Option<u64>,
    pub media_errors: Option<u64>,
    pub available_spare: Option<u64>,
    pub available_spare_threshold: Option<u64>,
    pub percentage_used: Option<u64>,
}

/// The predictive indicators of one SMART answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indicators {
    /// Raw values of the watched ATA attributes the disk has.
    pub ata: BTreeMap<u64, u64>,
    pub nvme: Option<NvmeHealth>,
}

impl Indicators {
    /// From `smartctl --json -A` output.
    pub fn from_smartctl(v: &Value) -> Indicators {
        let mut ata = BTreeMap::new();
        for a in v["ata_smart_attributes"]["table"].as_array().into_iter().flatten() {
            if let (Some(id), Some(raw)) = (a["id"].as_u64(), a["raw"]["value"].as_u64())
                && ATA_WATCHED.iter().any(|(w, _)| *w == id)
            {
                ata.insert(id, raw);
            }
        }
        let n = &v["nvme_smart_health_information_log"];
        let nvme = n.is_object().then(|| NvmeHealth {
            critical_warning: n["critical_warning"].as_u64(),
            media_errors: n["media_errors"].as_u64(),
            available_spare: n["available_spare"].as_u64(),
            available_spare_threshold: n["available_spare_threshold"].as_u64(),
            percentage_used: n["percentage_used"].as_u64(),
        });
        Indicators { ata, nvme }
    }

    /// For `get_disk_info`: `{"5": 8, "197": 0}` and the NVMe fields.
    pub fn to_json(&self) -> Value {
        let ata: serde_json::Map<String, Value> = self.ata.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let nvme = self.nvme.map(|n| {
            json!({"critical_warning": n.critical_warning, "media_errors": n.media_errors,
                   "available_spare": n.available_spare, "available_spare_threshold": n.available_spare_threshold,
                   "percentage_used": n.percentage_used})
        });
        json!({"ata": ata, "nvme": nvme})
    }

    /// The counters the predictive rules compare with the remembered baseline, by name.
    pub(crate) fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = self.ata.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        if let Some(m) = self.nvme.and_then(|n| n.media_errors) {
            c.insert("media_errors".into(), m);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smartctl_json_gives_the_five_attributes_and_the_nvme_fields() {
        let v: Value = serde_json::from_str(
            r#"{"ata_smart_attributes":{"table":[
                {"id":1,"name":"Raw_Read_Error_Rate","raw":{"value":123456}},
                {"id":5,"name":"Reallocated_Sector_Ct","raw":{"value":8}},
                {"id":187,"name":"Reported_Uncorrect","raw":{"value":0}},
                {"id":188,"name":"Command_Timeout","raw":{"value":4295032833}},
                {"id":197,"name":"Current_Pending_Sector","raw":{"value":2}},
                {"id":198,"name":"Offline_Uncorrectable","raw":{"value":2}}]}}"#,
        )
        .unwrap();
        let i = Indicators::from_smartctl(&v);
        assert_eq!(i.ata, BTreeMap::from([(5, 8), (187, 0), (188, 4_295_032_833), (197, 2), (198, 2)]));
        assert_eq!(i.nvme, None);
        let v: Value = serde_json::from_str(
            r#"{"nvme_smart_health_information_log":{"critical_warning":0,"temperature":40,
                "available_spare":100,"available_spare_threshold":10,"percentage_used":3,"media_errors":0}}"#,
        )
        .unwrap();
        let n = Indicators::from_smartctl(&v).nvme.unwrap();
        assert_eq!((n.available_spare, n.available_spare_threshold, n.percentage_used), (Some(100), Some(10), Some(3)));
        assert_eq!(Indicators::from_smartctl(&v).to_json()["nvme"]["media_errors"], 0);
    }
}
