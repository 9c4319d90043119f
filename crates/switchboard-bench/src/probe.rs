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
