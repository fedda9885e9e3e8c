//! `strftime_now` for chat templates (Llama 3.2 prints today's date): C-locale `strftime` over the system clock in
//! UTC, without a time-zone database.

use std::fmt::Write;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The broken-down UTC time of a Unix timestamp.
struct Civil {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32, // 0 = Sunday
    yday: u32,    // 1..=366
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

impl Civil {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUMULATIVE[(month - 1) as usize] + day + u32::from(month > 2 && is_leap(year));
        Civil {
            year,
            month,
            day,
            hour: rem / 3_600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
            yday,
        }
    }
}

/// Formats a Unix timestamp (seconds, UTC) like C's `strftime` in the C locale, as Python's
/// `datetime.strftime` does on Linux. A `-` after `%` drops the padding (glibc); unknown directives are copied as
/// they are.
pub fn strftime(format: &str, unix_seconds: i64) -> String {
    let t = Civil::from_unix(unix_seconds);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |out: &mut String, v: i64, width: usize, pad: char| {
            if unpadded {
                let _ = write!(out, "{v}");
            } else if pad == ' ' {
                let _ = write!(out, "{v:>width$}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        let hour12 = if t.hour.is_multiple_of(12) {
            12
        } else {
            t.hour % 12
        };
        match spec {
            Some('a') => out.push_str(&DAYS[t.weekday as usize][..3]),
            Some('A') => out.push_str(DAYS[t.weekday as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(t.month - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(t.month - 1) as usize]),
            Some('d') => num(&mut out, t.day.into(), 2, '0'),
            Some('e') => num(&mut out, t.day.into(), 2, ' '),
            Some('H') => num(&mut out, t.hour.into(), 2, '0'),
            Some('I') => num(&mut out, hour12.into(), 2, '0'),
            Some('j') => num(&mut out, t.yday.into(), 3, '0'),
            Some('m') => num(&mut out, t.month.into(), 2, '0'),
            Some('M') => num(&mut out, t.minute.into(), 2, '0'),
            Some('S') => num(&mut out, t.second.into(), 2, '0'),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('y') => num(&mut out, t.year.rem_euclid(100), 2, '0'),
            Some('Y') => {
                let _ = write!(out, "{}", t.year);
            }
            Some('u') => num(
                &mut out,
                if t.weekday == 0 { 7 } else { t.weekday.into() },
                1,
                '0',
            ),
            Some('w') => num(&mut out, t.weekday.into(), 1, '0'),
            Some('F') => out.push_str(&strftime("%Y-%m-%d", unix_seconds)),
            Some('D') | Some('x') => out.push_str(&strftime("%m/%d/%y", unix_seconds)),
            Some('T') | Some('X') => out.push_str(&strftime("%H:%M:%S", unix_seconds)),
            Some('R') => out.push_str(&strftime("%H:%M", unix_seconds)),
            Some('c') => out.push_str(&strftime("%a %b %e %H:%M:%S %Y", unix_seconds)),
            // datetime.now() is naive: no offset or zone name to print.
            Some('z') | Some('Z') => {}
            Some('f') => out.push_str("000000"),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch now, from the browser's clock (`SystemTime::now` panics on wasm32-unknown-unknown).
#[cfg(target_arch = "wasm32")]
pub(crate) fn unix_now() -> i64 {
    (js_sys::Date::now() / 1000.0).floor() as i64
}
