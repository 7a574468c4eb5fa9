//! The `striped` target's table line and arithmetic, as dm-stripe defines
//! them (`drivers/md/dm-stripe.c`, target version 1.6.0):
//!
//! ```text
//! striped <#stripes> <chunk size> <device> <offset> [<device> <offset>]...
//! ```
//!
//! The target's length is split into `#stripes` areas of equal size, one
//! per device, each starting at its device's `offset`. The target's
//! sectors go round the stripes in chunks of `chunk size` sectors: chunk
//! `c` of the target is chunk `c / #stripes` of stripe `c % #stripes`.
//! Kernel-free, so that the parsing and the arithmetic are host-tested.

use super::table::{parse_dev, parse_u64, ArgError, DevSpec};
use core::fmt;
use core::num::NonZeroU64;

/// Why a `striped` line was refused (dm-stripe's reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripedError {
    /// Fewer than the two leading arguments.
    NotEnoughArguments(usize),
    /// The stripe count is not a number, is 0, or does not fit 32 bits.
    BadStripeCount,
    /// The chunk size is not a number, is 0, or does not fit 32 bits.
    BadChunkSize,
    /// The target's length is not a multiple of the stripe count.
    LengthNotDivisibleByStripes {
        /// The target's length in sectors.
        len: u64,
        /// The stripe count.
        stripes: u32,
    },
    /// A stripe's length is not a multiple of the chunk size.
    LengthNotDivisibleByChunk {
        /// The length of each stripe in sectors.
        width: u64,
        /// The chunk size in sectors.
        chunk: u32,
    },
    /// Not one `<device> <offset>` pair per stripe.
    WrongDestinationCount {
        /// The stripe count.
        stripes: u32,
        /// How many arguments followed the two leading ones.
        got: usize,
    },
    /// A stripe's device or offset could not be parsed.
    Destination {
        /// The stripe.
        stripe: u32,
        /// What was wrong with it.
        err: ArgError,
    },
}

impl fmt::Display for StripedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StripedError::NotEnoughArguments(n) => write!(
                f,
                "not enough arguments: {n} (expected <#stripes> <chunk size> <device> <offset>...)"
            ),
            StripedError::BadStripeCount => write!(f, "invalid stripe count"),
            StripedError::BadChunkSize => write!(f, "invalid chunk size"),
            StripedError::LengthNotDivisibleByStripes { len, stripes } => write!(
                f,
                "target length {len} is not divisible by the number of stripes {stripes}"
            ),
            StripedError::LengthNotDivisibleByChunk { width, chunk } => write!(
                f,
                "stripe length {width} is not divisible by the chunk size {chunk}"
            ),
            StripedError::WrongDestinationCount { stripes, got } => write!(
                f,
                "{stripes} stripes need {} device and offset arguments, got {got}",
                u64::from(stripes) * 2
            ),
            StripedError::Destination { stripe, err } => {
                write!(f, "stripe {stripe}: {err}")
            }
        }
    }
}

/// A parsed and checked `striped` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripedArgs<'a> {
    /// The stripes' layout.
    pub geom: StripeGeometry,
    /// The `<device> <offset>` pairs (checked: one per stripe, each one
    /// parses).
    dests: &'a [u8],
}

impl<'a> StripedArgs<'a> {
    /// Each stripe's device and offset, in order.
    pub fn destinations(&self) -> impl Iterator<Item = (DevSpec<'a>, u64)> + 'a {
        let mut words = words(self.dests);
        core::iter::from_fn(move || {
            let dev = words.next()?;
            let offset = words.next()?;
            // Both were checked by `parse_striped`.
            Some((parse_dev(dev, 0).ok()?, parse_u64(offset)?))
        })
    }
}

fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
}

/// The rest of `s` after its first `n` words.
fn after_words(s: &[u8], n: usize) -> &[u8] {
    let mut rest = s;
    for _ in 0..n {
        let start = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest
}

/// Parses a `striped` line for a target of `len` sectors and checks it as
/// dm-stripe's constructor does (in its order, so the same line gets the
/// same complaint).
pub fn parse_striped(params: &[u8], len: u64) -> Result<StripedArgs<'_>, StripedError> {
    let argc = words(params).count();
    let mut w = words(params);
    let (Some(stripes), Some(chunk)) = (w.next(), w.next()) else {
        return Err(StripedError::NotEnoughArguments(argc));
    };
    let stripes = parse_u64(stripes)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v != 0)
        .ok_or(StripedError::BadStripeCount)?;
    let chunk = parse_u64(chunk)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v != 0)
        .ok_or(StripedError::BadChunkSize)?;
    let geom = StripeGeometry::new(len, stripes, chunk)?;
    let got = argc - 2;
    if got as u64 != u64::from(stripes) * 2 {
        return Err(StripedError::WrongDestinationCount { stripes, got });
    }
    let dests = after_words(params, 2);
    let mut d = words(dests);
    for stripe in 0..stripes {
        let (Some(dev), Some(offset)) = (d.next(), d.next()) else {
            // Counted above.
            return Err(StripedError::WrongDestinationCount { stripes, got });
        };
        let index = 2 + stripe as usize * 2;
        parse_dev(dev, index).map_err(|err| StripedError::Destination { stripe, err })?;
        parse_u64(offset).ok_or(StripedError::Destination {
            stripe,
            err: ArgError::NotANumber(index + 1),
        })?;
    }
    Ok(StripedArgs { geom, dests })
}

/// The layout of a striped target: how its sectors map to its stripes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeGeometry {
    stripes: NonZeroU64,
    chunk: NonZeroU64,
    /// Sectors of each stripe (the target's length / stripes).
    width: u64,
}

impl StripeGeometry {
    /// Checks a target of `len` sectors over `stripes` stripes of chunks
    /// of `chunk` sectors: each stripe gets a whole number of chunks. As
    /// dm-stripe (1.6.0), neither the stripe count nor the chunk size
    /// needs to be a power of two.
    pub fn new(len: u64, stripes: u32, chunk: u32) -> Result<Self, StripedError> {
        let n = NonZeroU64::new(u64::from(stripes)).ok_or(StripedError::BadStripeCount)?;
        let c = NonZeroU64::new(u64::from(chunk)).ok_or(StripedError::BadChunkSize)?;
        if len % n != 0 {
            return Err(StripedError::LengthNotDivisibleByStripes { len, stripes });
        }
        let width = len / n;
        if width % c != 0 {
            return Err(StripedError::LengthNotDivisibleByChunk { width, chunk });
        }
        Ok(StripeGeometry {
            stripes: n,
            chunk: c,
            width,
        })
    }

    /// The number of stripes.
    pub fn stripes(&self) -> u32 {
        // Made from a u32.
        self.stripes.get() as u32
    }

    /// The chunk size in sectors.
    pub fn chunk(&self) -> u32 {
        // Made from a u32.
        self.chunk.get() as u32
    }

    /// The sectors of each stripe (from its device's offset on).
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Where sector `offset` of the target lies: its stripe, and the
    /// sector inside that stripe (to add to the stripe's device offset).
    pub fn map(&self, offset: u64) -> (u32, u64) {
        let (n, in_chunk) = (offset / self.chunk, offset % self.chunk);
        // `n % stripes` < `stripes`, a u32.
        let stripe = (n % self.stripes) as u32;
        (stripe, (n / self.stripes) * self.chunk.get() + in_chunk)
    }

    /// How many sectors from `offset` on stay in one chunk (one stripe):
    /// dm-stripe splits I/O there (`dm_set_target_max_io_len`).
    pub fn chunk_left(&self, offset: u64) -> u64 {
        self.chunk.get() - offset % self.chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn parses_as_dm() {
        let a = parse_striped(b"2 128 /dev/vda 0 254:16 2048", 1024).unwrap();
        assert_eq!(a.geom.stripes(), 2);
        assert_eq!(a.geom.chunk(), 128);
        assert_eq!(a.geom.width(), 512);
        let d: Vec<_> = a.destinations().collect();
        assert_eq!(
            d,
            [
                (DevSpec::Path(b"/dev/vda"), 0),
                (DevSpec::Number(254, 16), 2048)
            ]
        );
        // Blanks anywhere.
        let a = parse_striped(b"  1\t8  /dev/vdb   16 ", 64).unwrap();
        assert_eq!(
            a.destinations().collect::<Vec<_>>(),
            [(DevSpec::Path(b"/dev/vdb"), 16)]
        );
        // Neither needs to be a power of two.
        let a = parse_striped(b"3 24 /dev/a 0 /dev/b 0 /dev/c 0", 3 * 24 * 5).unwrap();
        assert_eq!(a.geom.width(), 120);
    }

    #[test]
    fn refuses_as_dm() {
        use StripedError::*;
        assert_eq!(parse_striped(b"", 8), Err(NotEnoughArguments(0)));
        assert_eq!(parse_striped(b"1", 8), Err(NotEnoughArguments(1)));
        assert_eq!(parse_striped(b"0 8 /dev/a 0", 8), Err(BadStripeCount));
        assert_eq!(parse_striped(b"x 8 /dev/a 0", 8), Err(BadStripeCount));
        assert_eq!(
            parse_striped(b"4294967296 8 /dev/a 0", 8),
            Err(BadStripeCount)
        );
        assert_eq!(parse_striped(b"1 0 /dev/a 0", 8), Err(BadChunkSize));
        assert_eq!(parse_striped(b"1 -8 /dev/a 0", 8), Err(BadChunkSize));
        assert_eq!(
            parse_striped(b"2 8 /dev/a 0 /dev/b 0", 24),
            Err(LengthNotDivisibleByChunk {
                width: 12,
                chunk: 8
            })
        );
        assert_eq!(
            parse_striped(b"2 8 /dev/a 0 /dev/b 0", 15),
            Err(LengthNotDivisibleByStripes {
                len: 15,
                stripes: 2
            })
        );
        assert_eq!(
            parse_striped(b"2 8 /dev/a 0", 32),
            Err(WrongDestinationCount { stripes: 2, got: 2 })
        );
        assert_eq!(
            parse_striped(b"1 8 /dev/a 0 /dev/b", 32),
            Err(WrongDestinationCount { stripes: 1, got: 3 })
        );
        assert_eq!(
            parse_striped(b"2 8 /dev/a 0 vdb 0", 32),
            Err(Destination {
                stripe: 1,
                err: ArgError::BadDevice(4)
            })
        );
        assert_eq!(
            parse_striped(b"2 8 /dev/a x /dev/b 0", 32),
            Err(Destination {
                stripe: 0,
                err: ArgError::NotANumber(3)
            })
        );
        // dm checks the length before the destinations.
        assert_eq!(
            parse_striped(b"2 8 /dev/a 0", 15),
            Err(LengthNotDivisibleByStripes {
                len: 15,
                stripes: 2
            })
        );
    }

    /// Every sector of the target maps to exactly one sector of one
    /// stripe, inside that stripe's width, in dm-stripe's order.
    fn check_bijection(stripes: u32, chunk: u32, chunks_per_stripe: u64) {
        let width = u64::from(chunk) * chunks_per_stripe;
        let len = width * u64::from(stripes);
        let g = StripeGeometry::new(len, stripes, chunk).unwrap();
        let mut seen = std::vec![false; len as usize];
        for offset in 0..len {
            let (s, at) = g.map(offset);
            assert!(s < stripes && at < width, "{offset} -> {s}/{at}");
            let i = (u64::from(s) * width + at) as usize;
            assert!(!seen[i], "two sectors map to stripe {s} sector {at}");
            seen[i] = true;
            // dm-stripe's stripe_map_sector, spelled out.
            let c = offset / u64::from(chunk);
            assert_eq!(s as u64, c % u64::from(stripes));
            assert_eq!(
                at,
                c / u64::from(stripes) * u64::from(chunk) + offset % u64::from(chunk)
            );
            // Up to the chunk's end, the same stripe and consecutive
            // sectors.
            let left = g.chunk_left(offset);
            assert!(left >= 1 && left <= u64::from(chunk));
            let (s2, at2) = g.map(offset + left - 1);
            assert_eq!((s2, at2), (s, at + left - 1));
            if stripes > 1 && offset + left < len {
                assert_ne!(g.map(offset + left).0, s, "a chunk boundary changes stripe");
            }
        }
        assert!(seen.iter().all(|&b| b));
    }

    #[test]
    fn maps_every_sector_once() {
        check_bijection(1, 8, 4);
        check_bijection(2, 8, 4);
        check_bijection(3, 8, 3);
        check_bijection(4, 16, 2);
        check_bijection(3, 3, 5);
        check_bijection(5, 7, 3);
    }

    #[test]
    fn large_offsets() {
        // 2^40 sectors over 4 stripes of 64 KiB chunks.
        let g = StripeGeometry::new(1 << 40, 4, 128).unwrap();
        assert_eq!(g.map((1 << 40) - 1), (3, (1 << 38) - 1));
        assert_eq!(g.map(128 * 5 + 3), (1, 128 + 3));
        assert_eq!(g.chunk_left(128 * 5 + 3), 125);
        let g = StripeGeometry::new(u64::MAX / 3 * 3 / 3 * 3, 3, 1).unwrap();
        assert_eq!(g.map(5), (2, 1));
    }
}
