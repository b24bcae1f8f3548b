//! Where the CPU goes: seconds of CPU each process of the cluster (and every `postgres`
//! process of the machine, and the benchmark's own clients) used between two readings of
//! `/proc`.

use std::collections::BTreeMap;

use e2e::Cluster;

/// Clock ticks a second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds used so far, by process name.
pub struct Reading(BTreeMap<String, f64>);

/// Reads the CPU seconds of the cluster's processes and of Postgres.
pub fn read(cluster: &Cluster) -> Reading {
    let mut used = BTreeMap::new();
    for (name, pid) in cluster.pids() {
        *used.entry(name).or_insert(0.0) += seconds(pid);
    }
    let postgres: f64 = postgres_pids().into_iter().map(seconds).sum();
    used.insert("postgres".to_owned(), postgres);
    used.insert(
        "benchmark's clients".to_owned(),
        seconds(std::process::id()),
    );
    Reading(used)
}

impl Reading {
    /// Each process's share of the CPU used since `earlier`, largest first, and the total
    /// in CPU seconds.
    pub fn since(&self, earlier: &Reading) -> (Vec<(String, f64)>, f64) {
        let spent: Vec<(String, f64)> = self
            .0
            .iter()
            .map(|(name, now)| {
                (
                    name.clone(),
                    now - earlier.0.get(name).copied().unwrap_or(0.0),
                )
            })
            .collect();
        let total: f64 = spent.iter().map(|(_, s)| s).sum();
        let mut shares: Vec<(String, f64)> = spent
            .into_iter()
            .map(|(name, s)| (name, if total > 0.0 { s / total } else { 0.0 }))
            .collect();
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        (shares, total)
    }
}

/// Prints the split since `earlier` as one line.
pub fn print_split(now: &Reading, earlier: &Reading) {
    let (shares, total) = now.since(earlier);
    let parts: Vec<String> = shares
        .iter()
        .filter(|(_, share)| *share >= 0.005)
        .map(|(name, share)| format!("{name} {:.0} %", share * 100.0))
        .collect();
    println!("    CPU {total:.1} s: {}", parts.join(", "));
}

fn seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name: state is the 3rd field, utime the 14th, stime the 15th.
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS
}

fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .collect()
}
