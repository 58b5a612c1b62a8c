//! Small field checks shared by the message parsers.

/// Field-level parse failure; always surfaces as `bad_payload`.
pub(crate) struct Invalid;

pub(crate) type Checked<T> = Result<T, Invalid>;

pub(crate) fn ensure(cond: bool) -> Checked<()> {
    if cond {
        Ok(())
    } else {
        Err(Invalid)
    }
}

pub(crate) fn in_range<T: PartialOrd>(v: T, lo: T, hi: T) -> Checked<T> {
    ensure(v >= lo && v <= hi).map(|_| v)
}

pub(crate) fn finite_in(v: f64, lo: f64, hi: f64) -> Checked<f64> {
    ensure(v.is_finite() && v >= lo && v <= hi).map(|_| v)
}

fn lower_hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Exactly `N*2`... lowercase hex digits of a big-endian unsigned number.
pub(crate) fn lower_hex_u64(s: &str, digits: usize) -> Checked<u64> {
    let b = s.as_bytes();
    ensure(b.len() == digits && digits <= 16)?;
    b.iter().try_fold(0u64, |acc, &c| {
        lower_hex_digit(c)
            .map(|d| (acc << 4) | u64::from(d))
            .ok_or(Invalid)
    })
}

/// Lowercase hex of arbitrary bytes (SysEx data).
pub(crate) fn lower_hex_bytes(s: &str) -> Checked<Vec<u8>> {
    let b = s.as_bytes();
    ensure(b.len() % 2 == 0)?;
    b.chunks_exact(2)
        .map(|p| match (lower_hex_digit(p[0]), lower_hex_digit(p[1])) {
            (Some(h), Some(l)) => Ok((h << 4) | l),
            _ => Err(Invalid),
        })
        .collect()
}

/// The `"type"` field must name the frame's kind.
pub(crate) fn expect_type(ty: &str, name: &str) -> Checked<()> {
    ensure(ty == name)
}

/// For optional fields: absent is `None`, but a present field must have the
/// right type (`null` is not accepted as "absent"). Use with
/// `#[serde(default, deserialize_with = "present")]`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
