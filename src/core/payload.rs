//! The variable part of dm ioctl buffers: what follows the fixed header.
//!
//! Input (what a caller sends, checked by the driver):
//! - `DM_TABLE_LOAD`: `target_count` x (`struct dm_target_spec` + NUL-terminated
//!   parameters), the first at `data_start`, each `next` relative to its own
//!   spec ([`LoadSpecs`], dm-ioctl.c's `next_target()`);
//! - `DM_DEV_RENAME`, `DM_TARGET_MSG`: strings ([`payload_str`], [`TargetMsg`]).
//!
//! Output (what the driver writes from `RESULT_START` on, read by tools):
//! device names ([`write_name_list`]), target versions, target specs with
//! status text (`next` relative to the result start), dependencies.
//!
//! Every decoder is bounded by its slice and every writer reports "buffer
//! full" instead of writing past it, so neither side can be made to read or
//! write out of bounds by the other.

use super::dm_ioctl::{c_str, sys, HEADER_SIZE, STRUCT_SIZE};
use core::fmt;
use core::mem::{offset_of, size_of};

/// Where the driver puts results: right after `struct dm_ioctl`, 8-aligned
/// (`get_result_buffer()` in dm-ioctl.c).
pub const RESULT_START: usize = STRUCT_SIZE.next_multiple_of(8);

/// Size of `struct dm_target_spec`.
pub const SPEC_SIZE: usize = size_of::<sys::dm_target_spec>();

/// Longest target type name, with its NUL.
pub const TYPE_NAME_LEN: usize = sys::DM_MAX_TYPE_NAME as usize;

/// Why a request payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// `data_start` points before the end of the header or past the buffer.
    BadDataStart(u32),
    /// A table load with `target_count == 0`.
    NoTargets,
    /// Target `index` does not fit in the buffer (its `next`, or the first
    /// `data_start`, points outside it, backwards, or misaligned).
    SpecOutOfBounds(u32),
    /// Target `index`'s parameters have no NUL inside the buffer.
    ParamsNotTerminated(u32),
    /// Target `index`'s type name has no NUL inside its field.
    TypeNotTerminated(u32),
    /// A string argument has no NUL inside the buffer.
    StringNotTerminated,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::BadDataStart(s) => write!(f, "data_start {s} is outside the buffer"),
            PayloadError::NoTargets => write!(f, "no targets specified"),
            PayloadError::SpecOutOfBounds(i) => {
                write!(
                    f,
                    "target {i}: spec lies outside the buffer (bad data_start or next)"
                )
            }
            PayloadError::ParamsNotTerminated(i) => {
                write!(f, "target {i}: parameters not NUL-terminated")
            }
            PayloadError::TypeNotTerminated(i) => {
                write!(f, "target {i}: target type name not NUL-terminated")
            }
            PayloadError::StringNotTerminated => write!(f, "string argument not NUL-terminated"),
        }
    }
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_ne_bytes(a))
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// One target of a table: a `struct dm_target_spec` and the string after
/// it (parameters in a table load, status or table text in a reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetSpec<'a> {
    /// First sector the target maps.
    pub start: u64,
    /// Number of sectors.
    pub length: u64,
    /// Target type name.
    pub target_type: &'a [u8],
    /// The parameters or status text (without their NUL).
    pub params: &'a [u8],
}

/// Iterator over the targets of a `DM_TABLE_LOAD` buffer, with
/// dm-ioctl.c's `next_target()` checks: every spec lies inside the buffer,
/// is 8-aligned relative to the previous one, leaves room for its header,
/// and its parameters end with a NUL inside the buffer.
pub struct LoadSpecs<'a> {
    buf: &'a [u8],
    count: u32,
    index: u32,
    at: usize,
    next: usize,
    failed: bool,
}

impl<'a> LoadSpecs<'a> {
    /// `buf` is the whole request (header included, `data_size` bytes);
    /// the specs start at `data_start`.
    pub fn new(buf: &'a [u8], data_start: u32, target_count: u32) -> LoadSpecs<'a> {
        LoadSpecs {
            buf,
            count: target_count,
            index: 0,
            at: 0,
            next: data_start as usize,
            failed: false,
        }
    }

    /// Checks the whole table and returns the number of targets.
    pub fn validate(mut self) -> Result<u32, PayloadError> {
        if self.count == 0 {
            return Err(PayloadError::NoTargets);
        }
        for spec in self.by_ref() {
            spec?;
        }
        Ok(self.count)
    }

    fn step(&mut self) -> Result<TargetSpec<'a>, PayloadError> {
        let i = self.index;
        // The spec `next` bytes on must leave room for a whole spec header.
        let remaining = self.buf.len().saturating_sub(self.at);
        if self.next & 7 != 0
            || remaining < SPEC_SIZE
            || self.next > remaining - SPEC_SIZE
            || (self.index > 0 && self.next < SPEC_SIZE)
        {
            return Err(PayloadError::SpecOutOfBounds(i));
        }
        let at = self.at + self.next;
        let b = self.buf;
        let start = read_u64(b, at + offset_of!(sys::dm_target_spec, sector_start))
            .ok_or(PayloadError::SpecOutOfBounds(i))?;
        let length = read_u64(b, at + offset_of!(sys::dm_target_spec, length))
            .ok_or(PayloadError::SpecOutOfBounds(i))?;
        let next = read_u32(b, at + offset_of!(sys::dm_target_spec, next))
            .ok_or(PayloadError::SpecOutOfBounds(i))?;
        let ty_at = at + offset_of!(sys::dm_target_spec, target_type);
        let target_type =
            c_str(&b[ty_at..ty_at + TYPE_NAME_LEN]).ok_or(PayloadError::TypeNotTerminated(i))?;
        let params = c_str(&b[at + SPEC_SIZE..]).ok_or(PayloadError::ParamsNotTerminated(i))?;
        self.at = at;
        self.next = next as usize;
        Ok(TargetSpec {
            start,
            length,
            target_type,
            params,
        })
    }
}

impl<'a> Iterator for LoadSpecs<'a> {
    type Item = Result<TargetSpec<'a>, PayloadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let r = self.step();
        self.failed = r.is_err();
        self.index += 1;
        Some(r)
    }
}

/// Bytes a table load payload needs for these targets (`(type, params)`).
pub fn load_payload_size<'a>(targets: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    targets
        .map(|(_, params)| (SPEC_SIZE + params.len() + 1).next_multiple_of(8))
        .sum()
}

/// Encodes one table-load target at `at` of `buf` (a whole request), with
/// `next` pointing right after it (libdevmapper's layout). Returns the
/// offset of the following spec, or `None` if it does not fit or the type
/// name is too long.
pub fn encode_load_spec(buf: &mut [u8], at: usize, spec: &TargetSpec<'_>) -> Option<usize> {
    let size = (SPEC_SIZE + spec.params.len() + 1).next_multiple_of(8);
    if spec.target_type.len() >= TYPE_NAME_LEN || at.checked_add(size)? > buf.len() {
        return None;
    }
    buf[at..at + size].fill(0);
    put(
        buf,
        at + offset_of!(sys::dm_target_spec, sector_start),
        &spec.start.to_ne_bytes(),
    );
    put(
        buf,
        at + offset_of!(sys::dm_target_spec, length),
        &spec.length.to_ne_bytes(),
    );
    put(
        buf,
        at + offset_of!(sys::dm_target_spec, next),
        &(size as u32).to_ne_bytes(),
    );
    put(
        buf,
        at + offset_of!(sys::dm_target_spec, target_type),
        spec.target_type,
    );
    put(buf, at + SPEC_SIZE, spec.params);
    Some(at + size)
}

/// The NUL-terminated string a request carries at `data_start` (the new
/// name or uuid of `DM_DEV_RENAME`).
pub fn payload_str(buf: &[u8], data_start: u32) -> Result<&[u8], PayloadError> {
    let start = data_start as usize;
    if start < HEADER_SIZE || start >= buf.len() {
        return Err(PayloadError::BadDataStart(data_start));
    }
    c_str(&buf[start..]).ok_or(PayloadError::StringNotTerminated)
}

/// A `DM_TARGET_MSG` request: a sector and a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetMsg<'a> {
    /// Selects the target whose range holds this sector.
    pub sector: u64,
    /// The message text.
    pub message: &'a [u8],
}

impl<'a> TargetMsg<'a> {
    /// Decodes the `struct dm_target_msg` at `data_start`.
    pub fn decode(buf: &'a [u8], data_start: u32) -> Result<TargetMsg<'a>, PayloadError> {
        let start = data_start as usize;
        let msg_at = start.saturating_add(offset_of!(sys::dm_target_msg, message));
        if start < HEADER_SIZE || msg_at >= buf.len() {
            return Err(PayloadError::BadDataStart(data_start));
        }
        let sector = read_u64(buf, start).ok_or(PayloadError::BadDataStart(data_start))?;
        let message = c_str(&buf[msg_at..]).ok_or(PayloadError::StringNotTerminated)?;
        Ok(TargetMsg { sector, message })
    }
}

/// Writes results into a request buffer from [`RESULT_START`] on, as the
/// driver does. When something does not fit, the writer stops and
/// [`ResultWriter::full`] says so: the driver then sets
/// `DM_BUFFER_FULL_FLAG` and the caller retries with a larger buffer.
pub struct ResultWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    full: bool,
    /// The previous entry of a chain whose `next` is relative to it.
    last: Option<usize>,
}

impl<'a> ResultWriter<'a> {
    /// A writer over the whole request buffer (`data_size` bytes).
    pub fn new(buf: &'a mut [u8]) -> ResultWriter<'a> {
        let full = buf.len() < RESULT_START;
        ResultWriter {
            buf,
            pos: RESULT_START,
            full,
            last: None,
        }
    }

    /// Whether something did not fit.
    pub fn full(&self) -> bool {
        self.full
    }

    /// The request's new `data_size`: the end of what was written.
    pub fn used(&self) -> usize {
        self.pos.min(self.buf.len())
    }

    /// Reserves `len` bytes, zeroed, and moves on to the next 8-aligned
    /// offset; `None` (and full) if they do not fit.
    fn reserve(&mut self, len: usize) -> Option<usize> {
        let at = self.pos;
        let end = at.checked_add(len)?;
        if self.full || end > self.buf.len() {
            self.full = true;
            return None;
        }
        self.buf[at..end].fill(0);
        self.pos = end.next_multiple_of(8).min(self.buf.len().max(end));
        Some(at)
    }

    /// Points the previous entry's `next` (at `next_field` in it) to `at`.
    fn chain(&mut self, at: usize, next_field: usize) {
        if let Some(prev) = self.last.replace(at) {
            put(
                self.buf,
                prev + next_field,
                &((at - prev) as u32).to_ne_bytes(),
            );
        }
    }

    /// Writes the zeroed `dm_name_list` that means "no devices".
    pub fn empty_name_list(&mut self) -> bool {
        self.reserve(size_of::<sys::dm_name_list>()).is_some()
    }

    /// Appends one `dm_name_list` entry: name and event number, and when
    /// `with_uuid` (the request had `DM_UUID_FLAG`) the uuid flags and
    /// uuid. Returns false when full.
    pub fn name_entry(
        &mut self,
        dev: u64,
        name: &[u8],
        event_nr: u32,
        uuid: Option<&[u8]>,
        with_uuid: bool,
    ) -> bool {
        let name_at = offset_of!(sys::dm_name_list, name);
        let extra = (name_at + name.len() + 1).next_multiple_of(8);
        let uuid_len = match (with_uuid, uuid) {
            (true, Some(u)) => u.len() + 1,
            _ => 0,
        };
        let Some(at) = self.reserve(extra + 8 + uuid_len) else {
            return false;
        };
        put(self.buf, at, &dev.to_ne_bytes());
        put(self.buf, at + name_at, name);
        put(self.buf, at + extra, &event_nr.to_ne_bytes());
        let flags = match (with_uuid, uuid) {
            (false, _) => 0,
            (true, Some(u)) => {
                put(self.buf, at + extra + 8, u);
                sys::DM_NAME_LIST_FLAG_HAS_UUID
            }
            (true, None) => sys::DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID,
        };
        put(self.buf, at + extra + 4, &flags.to_ne_bytes());
        self.chain(at, offset_of!(sys::dm_name_list, next));
        true
    }

    /// Appends one `dm_target_versions` entry. Returns false when full.
    pub fn target_version(&mut self, name: &[u8], version: [u32; 3]) -> bool {
        let name_at = offset_of!(sys::dm_target_versions, name);
        let Some(at) = self.reserve(name_at + name.len() + 1) else {
            return false;
        };
        for (i, v) in version.iter().enumerate() {
            put(self.buf, at + 4 + 4 * i, &v.to_ne_bytes());
        }
        put(self.buf, at + name_at, name);
        self.chain(at, offset_of!(sys::dm_target_versions, next));
        true
    }

    /// Appends one target of a `DM_TABLE_STATUS` reply: its spec, then the
    /// text `fill` writes (status or table line; it gets the room left,
    /// and returns how much it wrote or `None` if that was not enough).
    /// Here `next` is relative to [`RESULT_START`], as dm-ioctl.c writes it.
    pub fn target_status(
        &mut self,
        start: u64,
        length: u64,
        target_type: &[u8],
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let at = self.pos;
        let room = self.buf.len().saturating_sub(at + SPEC_SIZE);
        if self.full || room == 0 {
            self.full = true;
            return false;
        }
        let text_at = at + SPEC_SIZE;
        // Leave one byte for the NUL.
        let Some(n) = fill(&mut self.buf[text_at..text_at + room - 1]) else {
            self.full = true;
            return false;
        };
        let n = n.min(room - 1);
        self.buf[at..text_at].fill(0);
        self.buf[text_at + n] = 0;
        let ty = &target_type[..target_type.len().min(TYPE_NAME_LEN - 1)];
        put(
            self.buf,
            at + offset_of!(sys::dm_target_spec, sector_start),
            &start.to_ne_bytes(),
        );
        put(
            self.buf,
            at + offset_of!(sys::dm_target_spec, length),
            &length.to_ne_bytes(),
        );
        put(
            self.buf,
            at + offset_of!(sys::dm_target_spec, target_type),
            ty,
        );
        let end = text_at + n + 1;
        self.pos = end.next_multiple_of(8);
        let next = (self.pos - RESULT_START) as u32;
        put(
            self.buf,
            at + offset_of!(sys::dm_target_spec, next),
            &next.to_ne_bytes(),
        );
        true
    }

    /// Writes a `dm_target_deps` with these device numbers.
    pub fn deps(&mut self, devs: &[u64]) -> bool {
        let dev_at = offset_of!(sys::dm_target_deps, dev);
        let Some(at) = self.reserve(dev_at + 8 * devs.len()) else {
            return false;
        };
        put(self.buf, at, &(devs.len() as u32).to_ne_bytes());
        for (i, d) in devs.iter().enumerate() {
            put(self.buf, at + dev_at + 8 * i, &d.to_ne_bytes());
        }
        true
    }

    /// Writes a NUL-terminated string (a target message's answer).
    pub fn string(&mut self, s: &[u8]) -> bool {
        let Some(at) = self.reserve(s.len() + 1) else {
            return false;
        };
        put(self.buf, at, s);
        true
    }
}

/// `core::fmt::Write` into a byte slice; remembers whether text was cut.
pub struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> ByteWriter<'a> {
    /// A writer filling `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> ByteWriter<'a> {
        ByteWriter {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written, or `None` if something did not fit.
    pub fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }
}

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Iterator over a `DM_TABLE_STATUS` reply: `count` specs from `payload`
/// (the buffer from `data_start` on), `next` relative to its start.
pub struct StatusSpecs<'a> {
    payload: &'a [u8],
    left: u32,
    at: usize,
}

impl<'a> StatusSpecs<'a> {
    /// Reads `target_count` specs from the reply payload.
    pub fn new(payload: &'a [u8], target_count: u32) -> StatusSpecs<'a> {
        StatusSpecs {
            payload,
            left: target_count,
            at: 0,
        }
    }
}

impl<'a> Iterator for StatusSpecs<'a> {
    type Item = TargetSpec<'a>;

    fn next(&mut self) -> Option<TargetSpec<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let p = self.payload;
        let at = self.at;
        let start = read_u64(p, at + offset_of!(sys::dm_target_spec, sector_start))?;
        let length = read_u64(p, at + offset_of!(sys::dm_target_spec, length))?;
        let next = read_u32(p, at + offset_of!(sys::dm_target_spec, next))? as usize;
        let ty_at = at + offset_of!(sys::dm_target_spec, target_type);
        let target_type = c_str(p.get(ty_at..ty_at + TYPE_NAME_LEN)?)?;
        let text = c_str(p.get(at + SPEC_SIZE..)?)?;
        // Each spec must lie after the previous one.
        if next <= at {
            self.left = 0;
        }
        self.at = next;
        Some(TargetSpec {
            start,
            length,
            target_type,
            params: text,
        })
    }
}

/// Iterator over a `DM_LIST_VERSIONS` reply: `(name, version)`.
pub struct TargetVersions<'a> {
    payload: &'a [u8],
    at: Option<usize>,
}

impl<'a> TargetVersions<'a> {
    /// Reads the chain from the reply payload.
    pub fn new(payload: &'a [u8]) -> TargetVersions<'a> {
        let at = if payload.len() >= size_of::<sys::dm_target_versions>() {
            Some(0)
        } else {
            None
        };
        TargetVersions { payload, at }
    }
}

impl<'a> Iterator for TargetVersions<'a> {
    type Item = (&'a [u8], [u32; 3]);

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at.take()?;
        let p = self.payload;
        let next = read_u32(p, at)? as usize;
        let v = [
            read_u32(p, at + 4)?,
            read_u32(p, at + 8)?,
            read_u32(p, at + 12)?,
        ];
        let name = c_str(p.get(at + offset_of!(sys::dm_target_versions, name)..)?)?;
        if next >= size_of::<sys::dm_target_versions>() {
            self.at = Some(at + next);
        }
        Some((name, v))
    }
}

/// Reads a `DM_TABLE_DEPS` reply: the device numbers, at most `max`.
pub fn decode_deps(payload: &[u8], out: &mut [u64]) -> Option<usize> {
    let count = read_u32(payload, 0)? as usize;
    let dev_at = offset_of!(sys::dm_target_deps, dev);
    let n = count.min(out.len());
    for (i, dev) in out.iter_mut().enumerate().take(n) {
        *dev = read_u64(payload, dev_at + 8 * i)?;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::super::dm_ioctl::{decode_dev, encode_dev, NameList};
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn load_buf(specs: &[TargetSpec<'_>]) -> Vec<u8> {
        let size = load_payload_size(specs.iter().map(|s| (s.target_type, s.params)));
        let mut buf = vec![0u8; RESULT_START + size];
        let mut at = RESULT_START;
        for s in specs {
            at = encode_load_spec(&mut buf, at, s).unwrap();
        }
        buf
    }

    fn spec<'a>(start: u64, length: u64, ty: &'a str, params: &'a str) -> TargetSpec<'a> {
        TargetSpec {
            start,
            length,
            target_type: ty.as_bytes(),
            params: params.as_bytes(),
        }
    }

    #[test]
    fn table_load_round_trips() {
        let specs = [
            spec(0, 100, "linear", "/dev/vda 0"),
            spec(100, 8, "zero", ""),
            spec(108, 50, "error", ""),
        ];
        let buf = load_buf(&specs);
        let got: Vec<_> = LoadSpecs::new(&buf, RESULT_START as u32, 3)
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(got, specs);
        assert_eq!(
            LoadSpecs::new(&buf, RESULT_START as u32, 3).validate(),
            Ok(3)
        );
    }

    #[test]
    fn table_load_rejects_bad_offsets() {
        let specs = [
            spec(0, 100, "linear", "/dev/vda 0"),
            spec(100, 8, "zero", ""),
        ];
        let buf = load_buf(&specs);
        let v = |b: &[u8], start: u32, count: u32| LoadSpecs::new(b, start, count).validate();
        assert_eq!(
            v(&buf, RESULT_START as u32, 0),
            Err(PayloadError::NoTargets)
        );
        // More targets than the buffer holds.
        assert_eq!(
            v(&buf, RESULT_START as u32, 3),
            Err(PayloadError::SpecOutOfBounds(2))
        );
        // data_start past the end, misaligned, or at the very end.
        assert_eq!(v(&buf, 1 << 30, 1), Err(PayloadError::SpecOutOfBounds(0)));
        assert_eq!(
            v(&buf, RESULT_START as u32 + 4, 1),
            Err(PayloadError::SpecOutOfBounds(0))
        );
        assert_eq!(
            v(&buf, buf.len() as u32, 1),
            Err(PayloadError::SpecOutOfBounds(0))
        );
        // `next` backwards (0 would loop on the same spec), or huge.
        for next in [0u32, 8, u32::MAX - 7] {
            let mut b = buf.clone();
            put(
                &mut b,
                RESULT_START + offset_of!(sys::dm_target_spec, next),
                &next.to_ne_bytes(),
            );
            assert_eq!(
                v(&b, RESULT_START as u32, 2),
                Err(PayloadError::SpecOutOfBounds(1))
            );
        }
        // Parameters running off the end of the buffer.
        let mut b = buf.clone();
        let last = b.len() - 1;
        b[RESULT_START + SPEC_SIZE..=last].fill(b'x');
        assert_eq!(
            v(&b, RESULT_START as u32, 1),
            Err(PayloadError::ParamsNotTerminated(0))
        );
        // A type name filling its whole field.
        let mut b = buf.clone();
        let ty = RESULT_START + offset_of!(sys::dm_target_spec, target_type);
        b[ty..ty + TYPE_NAME_LEN].fill(b'a');
        assert_eq!(
            v(&b, RESULT_START as u32, 1),
            Err(PayloadError::TypeNotTerminated(0))
        );
    }

    #[test]
    fn name_list_written_is_read_back() {
        let mut buf = vec![0u8; 4096];
        let mut w = ResultWriter::new(&mut buf);
        assert!(w.name_entry(encode_dev(254, 0), b"origin", 3, None, true));
        assert!(w.name_entry(encode_dev(254, 1), b"snap", 0, Some(b"RDM-snap"), true));
        assert!(!w.full());
        let used = w.used();
        let names: Vec<_> = NameList::new(&buf[RESULT_START..used]).collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].name, b"origin");
        assert_eq!(names[0].event_nr, Some(3));
        assert_eq!(decode_dev(names[1].dev), (254, 1));
        assert_eq!(names[1].uuid, Some(&b"RDM-snap"[..]));
    }

    #[test]
    fn empty_name_list_reads_as_empty() {
        let mut buf = vec![0xffu8; 1024];
        let mut w = ResultWriter::new(&mut buf);
        assert!(w.empty_name_list());
        let used = w.used();
        assert_eq!(NameList::new(&buf[RESULT_START..used]).count(), 0);
    }

    #[test]
    fn writer_reports_full_and_never_writes_past_the_buffer() {
        let mut buf = vec![0u8; RESULT_START + 20];
        let mut w = ResultWriter::new(&mut buf);
        assert!(!w.name_entry(1, b"a-rather-long-device-name", 0, None, false));
        assert!(w.full());
        let mut small = vec![0u8; HEADER_SIZE];
        assert!(ResultWriter::new(&mut small).full());
    }

    #[test]
    fn status_specs_round_trip() {
        let mut buf = vec![0u8; 4096];
        let mut w = ResultWriter::new(&mut buf);
        let text = |t: &'static [u8]| {
            move |out: &mut [u8]| {
                let n = t.len();
                (n <= out.len()).then(|| {
                    out[..n].copy_from_slice(t);
                    n
                })
            }
        };
        assert!(w.target_status(0, 100, b"linear", text(b"254:0 0")));
        assert!(w.target_status(100, 8, b"zero", text(b"")));
        let used = w.used();
        let got: Vec<_> = StatusSpecs::new(&buf[RESULT_START..used], 2).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].params, b"254:0 0");
        assert_eq!(got[1].target_type, b"zero");
        assert_eq!(got[1].start, 100);
    }

    #[test]
    fn status_that_does_not_fit_is_full() {
        let mut buf = vec![0u8; RESULT_START + SPEC_SIZE + 4];
        let mut w = ResultWriter::new(&mut buf);
        assert!(!w.target_status(0, 1, b"linear", |out| (out.len() >= 10).then_some(10)));
        assert!(w.full());
    }

    #[test]
    fn versions_and_deps_round_trip() {
        let mut buf = vec![0u8; 4096];
        let mut w = ResultWriter::new(&mut buf);
        assert!(w.target_version(b"linear", [1, 4, 0]));
        assert!(w.target_version(b"zero", [1, 2, 0]));
        let used = w.used();
        let got: Vec<_> = TargetVersions::new(&buf[RESULT_START..used]).collect();
        assert_eq!(
            got,
            vec![(&b"linear"[..], [1, 4, 0]), (&b"zero"[..], [1, 2, 0])]
        );

        let mut buf = vec![0u8; 4096];
        let mut w = ResultWriter::new(&mut buf);
        assert!(w.deps(&[encode_dev(253, 0), encode_dev(8, 16)]));
        let mut out = [0u64; 4];
        assert_eq!(decode_deps(&buf[RESULT_START..], &mut out), Some(2));
        assert_eq!(decode_dev(out[1]), (8, 16));
    }

    #[test]
    fn strings_and_messages() {
        let mut buf = vec![0u8; 512];
        buf[RESULT_START..RESULT_START + 4].copy_from_slice(b"new\0");
        assert_eq!(payload_str(&buf, RESULT_START as u32), Ok(&b"new"[..]));
        assert!(payload_str(&buf, 10).is_err());
        assert!(payload_str(&buf, 4096).is_err());
        let mut b = vec![b'x'; 400];
        assert_eq!(payload_str(&b, 320), Err(PayloadError::StringNotTerminated));
        b[320..328].copy_from_slice(&77u64.to_ne_bytes());
        b[399] = 0;
        let m = TargetMsg::decode(&b, 320).unwrap();
        assert_eq!(m.sector, 77);
        assert_eq!(m.message.len(), 399 - 328);
    }
}
