//! Values written for people, the same in the CLI's output and the UI's
//! pages: sizes in binary units, times in the local time zone.

/// Sizes for people: `512 B`, `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A timestamp in the local time zone, to the second.
pub fn local_time(t: &jiff::Timestamp) -> String {
    t.to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn local_time_has_seconds() {
        let t: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let shown = local_time(&t);
        assert_eq!(shown.len(), "2026-01-02 03:04:05".len(), "{shown}");
        assert!(shown.ends_with(":05"), "{shown}");
    }
}
