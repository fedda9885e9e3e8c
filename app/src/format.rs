//! Numbers as people read them: sizes, durations, rates. Pure Rust, tested natively.

/// Bytes in decimal units, as download dialogs show them ("97.6 MB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// A duration in seconds, rounded ("850 ms", "12 s", "3 min 05 s").
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".to_string();
    }
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    let s = seconds.round() as u64;
    if s < 60 { format!("{s} s") } else { format!("{} min {:02} s", s / 60, s % 60) }
}

/// Download speed and time left, from bytes done of total after `elapsed` seconds ("12.5 MB/s, 6 s left").
pub fn speed_and_eta(done: u64, total: u64, elapsed: f64) -> String {
    if elapsed <= 0.0 || done == 0 {
        return String::new();
    }
    let rate = done as f64 / elapsed;
    let left = total.saturating_sub(done) as f64 / rate;
    format!("{}/s, {} left", bytes(rate as u64), duration(left))
}

/// Whole percent of `done` in `total` (0 when total is unknown).
pub fn percent(done: u64, total: u64) -> u32 {
    if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * 100.0).floor() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(98_362_432), "98.4 MB");
        assert_eq!(bytes(2_000_000_000), "2.0 GB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(12.4), "12 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(f64::INFINITY), "—");
    }

    #[test]
    fn progress() {
        assert_eq!(speed_and_eta(50_000_000, 100_000_000, 5.0), "10.0 MB/s, 5 s left");
        assert_eq!(speed_and_eta(0, 100, 1.0), "");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent(7, 5), 100);
    }
}
