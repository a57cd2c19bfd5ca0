//! DSMR P1: the smart-meter port of the Netherlands, Belgium and Luxembourg (ESMR 5 telegrams).
//!
//! A P1 meter writes a telegram every second (ESMR 5; ten seconds in DSMR 4): lines from `/` to
//! `!`, then the CRC16 of everything from the `/` to the `!` inclusive, as four hex digits. We read
//! the meter's clock (`0-0:1.0.0`, local time with `S`ummer or `W`inter) and its four energy
//! registers: import `1-0:1.8.1` + `1-0:1.8.2` and export `1-0:2.8.1` + `1-0:2.8.2` (tariffs 1
//! and 2, in kWh with three decimals, so exact in Wh). The port is a serial line (115200 8N1) or
//! a TCP stream from a P1 dongle or ser2net; both are read the same way.

use std::time::Duration;

use gridchan_channel::WattHours;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::registers::Sample;
use super::{LiveMeter, Problem};
use crate::clock::SimClock;

/// The longest telegram taken: an ESMR 5 telegram with four M-Bus devices is about 2 KiB.
pub const MAX_TELEGRAM: usize = 16 * 1024;

/// Where a P1 port is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P1Port {
    /// A serial device (a P1 cable), read at 115200 8N1.
    Serial(std::path::PathBuf),
    /// A TCP stream (a P1 dongle or ser2net), `host:port`.
    Tcp(String),
}

impl std::fmt::Display for P1Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            P1Port::Serial(p) => write!(f, "p1:{}", p.display()),
            P1Port::Tcp(a) => write!(f, "p1:{a}"),
        }
    }
}

impl P1Port {
    /// The device path or `host:port`, as written after `p1:`.
    pub fn address(&self) -> String {
        match self {
            P1Port::Serial(p) => p.display().to_string(),
            P1Port::Tcp(a) => a.clone(),
        }
    }
}

impl std::str::FromStr for P1Port {
    type Err = crate::error::GatewayError;

    /// A path (`/dev/ttyUSB0`) is a serial device; `HOST:PORT` a TCP stream.
    fn from_str(s: &str) -> Result<P1Port, Self::Err> {
        if s.starts_with('/') {
            return Ok(P1Port::Serial(s.into()));
        }
        match super::host_port(s) {
            Some(_) => Ok(P1Port::Tcp(s.to_string())),
            None => Err(crate::error::GatewayError::Config(format!(
                "P1 port {s:?} is neither a device path (/dev/ttyUSB0) nor HOST:PORT"
            ))),
        }
    }
}

/// What one telegram says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Telegram {
    /// The meter's clock (ms since the Unix epoch), if the telegram has `0-0:1.0.0`.
    pub at_ms: Option<u64>,
    pub import: WattHours,
    pub export: WattHours,
}

/// Why a telegram was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramError {
    #[error("bad CRC: the telegram says {said:04X}, its bytes give {computed:04X}")]
    Crc { said: u16, computed: u16 },
    #[error("no CRC after the '!' (DSMR 4 and ESMR 5 telegrams end with one)")]
    NoCrc,
    #[error("truncated: a new telegram began before this one ended")]
    Truncated,
    #[error("longer than {MAX_TELEGRAM} bytes")]
    TooLong,
    #[error("no register {0} (import is 1-0:1.8.1 + 1-0:1.8.2, export 1-0:2.8.1 + 1-0:2.8.2)")]
    Missing(&'static str),
    #[error("line {line}: {detail}")]
    BadLine { line: usize, detail: String },
}

const REGISTERS: [&str; 4] = ["1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2"];

/// Parses one whole telegram, `/` through the CRC line, and checks its CRC.
pub fn parse(bytes: &[u8]) -> Result<Telegram, TelegramError> {
    let bang = bytes
        .iter()
        .position(|b| *b == b'!')
        .ok_or(TelegramError::NoCrc)?;
    let said = std::str::from_utf8(&bytes[bang + 1..])
        .ok()
        .map(str::trim)
        .filter(|s| s.len() == 4)
        .and_then(|s| u16::from_str_radix(s, 16).ok())
        .ok_or(TelegramError::NoCrc)?;
    let computed = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(&bytes[..=bang]);
    if said != computed {
        return Err(TelegramError::Crc { said, computed });
    }
    let text = String::from_utf8_lossy(&bytes[..bang]);
    let mut at_ms = None;
    let mut registers = [None; 4];
    for (n, line) in text.lines().enumerate() {
        let bad = |detail: String| TelegramError::BadLine {
            line: n + 1,
            detail,
        };
        let Some((obis, rest)) = line.split_once('(') else {
            continue;
        };
        let value = rest.split(')').next().unwrap_or_default();
        if obis == "0-0:1.0.0" {
            at_ms = Some(timestamp(value).ok_or_else(|| {
                bad(format!(
                    "timestamp {value:?} is not YYMMDDhhmmss and S or W"
                ))
            })?);
        } else if let Some(k) = REGISTERS.iter().position(|r| *r == obis) {
            registers[k] = Some(kwh_as_wh(value).ok_or_else(|| {
                bad(format!(
                    "{obis} value {value:?} is not kWh with up to three decimals"
                ))
            })?);
        }
    }
    let mut wh = [0u64; 4];
    for (k, r) in registers.iter().enumerate() {
        wh[k] = r.ok_or(TelegramError::Missing(REGISTERS[k]))?;
    }
    Ok(Telegram {
        at_ms,
        import: WattHours(wh[0].saturating_add(wh[1])),
        export: WattHours(wh[2].saturating_add(wh[3])),
    })
}

/// `001234.567*kWh` as Wh.
fn kwh_as_wh(value: &str) -> Option<u64> {
    let number = value.strip_suffix("*kWh")?;
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || frac.len() > 3
        || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac: u64 = format!("{frac:0<3}").parse().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(frac)
}

/// `YYMMDDhhmmssX`: the meter's local time, `X` = `S` (summer, UTC+2) or `W` (winter, UTC+1): the
/// three P1 countries keep Central European Time.
fn timestamp(value: &str) -> Option<u64> {
    if value.len() != 13 || !value.is_ascii() {
        return None;
    }
    let n = |r: std::ops::Range<usize>| value[r].parse::<i8>().ok();
    let offset_hours = match &value[12..] {
        "S" => 2,
        "W" => 1,
        _ => return None,
    };
    let local = jiff::civil::DateTime::new(
        2000 + i16::from(n(0..2)?),
        n(2..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        0,
    )
    .ok()?;
    let at = local
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(offset_hours)))
        .ok()?;
    u64::try_from(at.timestamp().as_millisecond()).ok()
}

/// Splits a byte stream into telegrams: from the `/` that begins one to the line beginning with
/// `!`. Lines before the first `/` (a connection that began mid-telegram) are skipped.
#[derive(Default)]
pub struct Framer {
    telegram: Vec<u8>,
    in_telegram: bool,
    too_long: bool,
}

impl Framer {
    /// Takes one line (with its line ending); gives a telegram's bytes when the line ends one, or
    /// a framing error.
    pub fn line(&mut self, line: &[u8]) -> Option<Result<Vec<u8>, TelegramError>> {
        let mut out = None;
        // Only a telegram's first line has a '/': one within a line is a new telegram that cut
        // the last one off mid-line.
        let mut line = line;
        if let Some(start) = line.iter().position(|b| *b == b'/') {
            if self.in_telegram {
                out = Some(Err(TelegramError::Truncated));
            }
            line = &line[start..];
            self.telegram.clear();
            self.in_telegram = true;
            self.too_long = false;
        }
        if !self.in_telegram {
            return out;
        }
        if self.telegram.len() + line.len() > MAX_TELEGRAM {
            self.too_long = true;
        } else if !self.too_long {
            self.telegram.extend_from_slice(line);
        }
        if line.first() == Some(&b'!') {
            self.in_telegram = false;
            let whole = std::mem::take(&mut self.telegram);
            return Some(if self.too_long {
                Err(TelegramError::TooLong)
            } else {
                Ok(whole)
            });
        }
        out
    }
}

/// Reads lines of at most [`MAX_TELEGRAM`] bytes (a longer one is cut there) until the stream
/// ends, giving each to `each`.
async fn lines<R: AsyncBufRead + Unpin>(
    mut reader: R,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        let (take, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (MAX_TELEGRAM + 1).saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        reader.consume(take);
        if end {
            each(&line);
            line.clear();
        }
    }
}

/// Reads `port` for as long as the meter lives, reconnecting after a failure (1 s, doubling to
/// 30 s), and gives every good telegram's registers to `meter`.
pub(super) async fn run(port: P1Port, meter: LiveMeter, clock: SimClock) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = match &port {
            P1Port::Tcp(address) => match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => read(&port, tokio::io::BufReader::new(stream), &meter, &clock).await,
                Err(e) => Err(e),
            },
            P1Port::Serial(path) => match open_serial(path) {
                Ok(file) => {
                    let file = tokio::fs::File::from_std(file);
                    read(&port, tokio::io::BufReader::new(file), &meter, &clock).await
                }
                Err(e) => Err(e),
            },
        };
        let why = match result {
            Ok(true) => {
                backoff = Duration::from_secs(1);
                "the meter closed the connection".to_string()
            }
            Ok(false) => "the meter closed the connection before a telegram".to_string(),
            Err(e) => e.to_string(),
        };
        meter.problem(Problem::Connection(format!(
            "{port}: {why}; trying again in {} s",
            backoff.as_secs()
        )));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Reads telegrams until the stream ends; says whether any telegram was good.
async fn read<R: AsyncBufRead + Unpin>(
    port: &P1Port,
    reader: R,
    meter: &LiveMeter,
    clock: &SimClock,
) -> std::io::Result<bool> {
    let mut framer = Framer::default();
    let mut any = false;
    lines(reader, |line| {
        let telegram = match framer.line(line) {
            None => return,
            Some(Err(e)) => return meter.problem(Problem::Input(format!("{port}: telegram {e}"))),
            Some(Ok(bytes)) => bytes,
        };
        match parse(&telegram) {
            Ok(t) => {
                any = true;
                meter.sample(
                    &port.to_string(),
                    Sample {
                        at_ms: t.at_ms.unwrap_or_else(|| clock.now_ms()),
                        import: t.import,
                        export: t.export,
                    },
                );
            }
            Err(e) => meter.problem(Problem::Input(format!("{port}: telegram {e}"))),
        }
    })
    .await?;
    Ok(any)
}

/// Opens a serial device raw at 115200 baud (ESMR 5; a pseudo-terminal ignores the speed).
fn open_serial(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use rustix::termios;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
    let mut t = termios::tcgetattr(&file)?;
    t.make_raw();
    t.set_speed(115_200)?;
    termios::tcsetattr(&file, termios::OptionalActions::Now, &t)?;
    Ok(file)
}

/// Telegrams in the standard's format, for tests and the simulated P1 meter: `import` and
/// `export` split across the two tariffs, the meter's clock at `at_ms`.
pub fn telegram(at_ms: u64, import: WattHours, export: WattHours) -> Vec<u8> {
    let at = jiff::Timestamp::from_millisecond(at_ms as i64).unwrap_or_default();
    let zone = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap_or(jiff::tz::TimeZone::UTC);
    let local = at.to_zoned(zone);
    let summer = if local.offset().seconds() == 7_200 {
        'S'
    } else {
        'W'
    };
    let kwh = |wh: u64| format!("{:06}.{:03}*kWh", wh / 1000, wh % 1000);
    let (i1, i2) = (import.0 / 2, import.0 - import.0 / 2);
    let (e1, e2) = (export.0 / 3, export.0 - export.0 / 3);
    let mut t = format!(
        "/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0({}{summer})\r\n\
         0-0:96.1.1(4530303434303037313331363530363138)\r\n\
         1-0:1.8.1({})\r\n1-0:1.8.2({})\r\n1-0:2.8.1({})\r\n1-0:2.8.2({})\r\n\
         0-0:96.14.0(0002)\r\n1-0:1.7.0(00.318*kW)\r\n1-0:2.7.0(00.000*kW)\r\n!",
        local.strftime("%y%m%d%H%M%S"),
        kwh(i1),
        kwh(i2),
        kwh(e1),
        kwh(e2),
    )
    .into_bytes();
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(&t);
    t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example telegram of the ESMR 5.0 P1 companion standard (v5.0.2, section 6.12),
    /// trimmed to the lines we read and its CRC recomputed.
    fn standard() -> Vec<u8> {
        let body = "/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(101209113020W)\r\n\
            0-0:96.1.1(4B384547303034303436333935353037)\r\n1-0:1.8.1(123456.789*kWh)\r\n\
            1-0:1.8.2(123456.789*kWh)\r\n1-0:2.8.1(123456.789*kWh)\r\n1-0:2.8.2(123456.789*kWh)\r\n\
            0-0:96.14.0(0002)\r\n1-0:1.7.0(01.193*kW)\r\n1-0:2.7.0(00.000*kW)\r\n!";
        let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
        format!("{body}{crc:04X}\r\n").into_bytes()
    }

    #[test]
    fn the_crc_is_crc16_arc_as_the_standard_gives_it() {
        // CRC-16/ARC's check value (the CRC of "123456789"), as the standard's polynomial
        // x^16 + x^15 + x^2 + 1, LSB first, gives it.
        assert_eq!(
            crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(b"123456789"),
            0xBB3D
        );
    }

    #[test]
    fn a_telegram_gives_the_meter_time_and_the_summed_registers() {
        let t = parse(&standard()).unwrap();
        assert_eq!(t.import, WattHours(246_913_578));
        assert_eq!(t.export, WattHours(246_913_578));
        // 2010-12-09 11:30:20 winter time is 10:30:20 UTC.
        assert_eq!(t.at_ms, Some(1_291_890_620_000));
    }

    #[test]
    fn our_telegrams_parse_back_in_summer_and_winter() {
        for at_ms in [1_752_487_200_000u64, 1_736_726_400_000] {
            let bytes = telegram(at_ms, WattHours(12_345_678), WattHours(9_001));
            let t = parse(&bytes).unwrap();
            assert_eq!(
                (t.at_ms, t.import, t.export),
                (Some(at_ms), WattHours(12_345_678), WattHours(9_001))
            );
        }
    }

    #[test]
    fn a_bad_telegram_says_what_is_wrong() {
        let mut bad_crc = standard();
        let n = bad_crc.len();
        bad_crc[n - 3] = if bad_crc[n - 3] == b'0' { b'1' } else { b'0' };
        assert!(matches!(parse(&bad_crc), Err(TelegramError::Crc { .. })));
        let mut flipped = standard();
        let at = flipped.windows(3).position(|w| w == b"789").unwrap();
        flipped[at] = b'8';
        assert!(matches!(parse(&flipped), Err(TelegramError::Crc { .. })));
        let no_crc = b"/X\r\n1-0:1.8.1(1.000*kWh)\r\n!\r\n";
        assert_eq!(parse(no_crc), Err(TelegramError::NoCrc));
        let seal = |body: &str| {
            let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
            format!("{body}{crc:04X}\r\n").into_bytes()
        };
        let missing = seal("/X\r\n1-0:1.8.1(000001.000*kWh)\r\n1-0:1.8.2(000001.000*kWh)\r\n!");
        assert_eq!(
            parse(&missing).unwrap_err().to_string(),
            "no register 1-0:2.8.1 (import is 1-0:1.8.1 + 1-0:1.8.2, export 1-0:2.8.1 + 1-0:2.8.2)"
        );
        let watts = seal("/X\r\n1-0:1.8.1(000001.000*W)\r\n!");
        assert_eq!(
            parse(&watts).unwrap_err().to_string(),
            "line 2: 1-0:1.8.1 value \"000001.000*W\" is not kWh with up to three decimals"
        );
        let when = seal("/X\r\n0-0:1.0.0(101309113020W)\r\n!");
        assert!(matches!(
            parse(&when),
            Err(TelegramError::BadLine { line: 2, .. })
        ));
    }

    #[test]
    fn framing_skips_noise_and_reports_truncated_and_oversized_telegrams() {
        let mut f = Framer::default();
        let feed = |f: &mut Framer, bytes: &[u8]| {
            bytes
                .split_inclusive(|b| *b == b'\n')
                .filter_map(|l| f.line(l))
                .collect::<Vec<_>>()
        };
        let good = standard();
        // A connection that begins mid-telegram, then a whole one.
        let mut stream = b"1-0:2.8.2(000.000*kWh)\r\n!ABCD\r\n".to_vec();
        stream.extend_from_slice(&good);
        assert_eq!(feed(&mut f, &stream), vec![Ok(good.clone())]);
        // A telegram cut off by the next one: the cut one is reported, the next one kept.
        let mut cut = good[..good.len() / 2].to_vec();
        cut.extend_from_slice(&good);
        assert_eq!(
            feed(&mut f, &cut),
            vec![Err(TelegramError::Truncated), Ok(good.clone())]
        );
        let mut long = b"/X\r\n".to_vec();
        for _ in 0..MAX_TELEGRAM / 10 {
            long.extend_from_slice(b"0-0:0(0)\r\n");
        }
        long.extend_from_slice(b"!0000\r\n");
        long.extend_from_slice(&good);
        assert_eq!(
            feed(&mut f, &long),
            vec![Err(TelegramError::TooLong), Ok(good)]
        );
    }
}
