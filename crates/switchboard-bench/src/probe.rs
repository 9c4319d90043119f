//! Reads a server process's CPU time and resident memory from /proc.

pub struct Process {
    pid: u32,
    ticks_per_second: u64,
}

impl Process {
    pub fn new(pid: u32) -> Self {
        // CLK_TCK is 100 on Linux for all practical purposes.
        Self {
            pid,
            ticks_per_second: 100,
        }
    }

    /// User + system CPU time in microseconds.
    pub fn cpu_micros(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) * 1_000_000 / self.ticks_per_second)
    }

    /// Each live thread's CPU time in microseconds, by thread id, from its `schedstat`
    /// (nanoseconds): `cpu_micros` counts 10 ms ticks, too coarse for steps of 100 ms.
    pub fn thread_cpu_micros(&self) -> Option<Vec<(u32, u64)>> {
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .flatten()
        {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                threads.push((tid, ns / 1000));
            }
        }
        (!threads.is_empty()).then_some(threads)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
