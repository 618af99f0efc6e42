//! HVM context blobs (`XEN_DOMCTL_gethvmcontext` / `sethvmcontext`): typed records, encoded
//! and decoded.
//!
//! A blob is a sequence of records, each an [`HvmSaveDescriptor`] (type code, instance,
//! length) and `length` bytes. It starts with a HEADER and ends with an END record of length 0.
//! The records a builder writes have types here ([`HvmRecord::Header`], [`HvmRecord::Cpu`],
//! [`HvmRecord::Mtrr`]); every other record is kept as bytes ([`HvmRecord::Other`]), so a blob
//! Xen returned re-encodes byte for byte.
//!
//! Decoding is bounded: it allocates at most the input's length, and bad input (a truncated
//! record, a length that runs past the end, a typed record of the wrong size, a missing HEADER
//! or END, bytes after END) is an [`HvmContextError`] naming the offset, never a panic.
//!
//! # Examples
//!
//! ```
//! use xenctrl::abi::{HvmHwCpu, HvmSaveHeader, HVM_FILE_MAGIC, HVM_FILE_VERSION};
//! use xenctrl::hvm_context::{HvmContext, HvmRecord};
//!
//! let mut cpu = HvmHwCpu::zeroed();
//! cpu.rip = 0x100_0000;
//! let ctx = HvmContext {
//!     records: vec![
//!         HvmRecord::Header(HvmSaveHeader {
//!             magic: HVM_FILE_MAGIC,
//!             version: HVM_FILE_VERSION,
//!             ..Default::default()
//!         }),
//!         HvmRecord::Cpu { vcpu: 0, cpu: Box::new(cpu) },
//!     ],
//! };
//! let bytes = ctx.encode();
//! assert_eq!(bytes.len(), (8 + 24) + (8 + 1032) + 8);
//! assert_eq!(HvmContext::decode(&bytes)?, ctx);
//! assert!(HvmContext::decode(&bytes[..bytes.len() - 1]).is_err());
//! # Ok::<(), xenctrl::hvm_context::HvmContextError>(())
//! ```

use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{HvmHwCpu, HvmHwMtrr, HvmSaveDescriptor, HvmSaveHeader};

/// Record type code of END.
pub const HVM_SAVE_CODE_END: u16 = 0;
/// Record type code of HEADER.
pub const HVM_SAVE_CODE_HEADER: u16 = 1;
/// Record type code of CPU (one per vCPU; the instance is the vCPU).
pub const HVM_SAVE_CODE_CPU: u16 = 2;
/// Record type code of MTRR (one per vCPU; the instance is the vCPU).
pub const HVM_SAVE_CODE_MTRR: u16 = 14;

/// `cr0`: protection enable.
pub const X86_CR0_PE: u64 = 1 << 0;
/// `cr0`: extension type (reads as 1).
pub const X86_CR0_ET: u64 = 1 << 4;
/// `cr0`: paging.
pub const X86_CR0_PG: u64 = 1 << 31;

/// One record of an HVM context (END is implicit: [`HvmContext::encode`] appends it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HvmRecord {
    /// The HEADER record (instance 0).
    Header(HvmSaveHeader),
    /// A vCPU's registers.
    Cpu {
        /// The vCPU (the record's instance).
        vcpu: u16,
        /// Its state.
        cpu: Box<HvmHwCpu>,
    },
    /// A vCPU's PAT and MTRRs.
    Mtrr {
        /// The vCPU (the record's instance).
        vcpu: u16,
        /// Its MSRs.
        mtrr: Box<HvmHwMtrr>,
    },
    /// Any other record, undecoded.
    Other {
        /// Its type code.
        typecode: u16,
        /// Its instance.
        instance: u16,
        /// Its bytes.
        data: Vec<u8>,
    },
}

impl HvmRecord {
    /// The record's descriptor (type code, instance, length).
    pub fn descriptor(&self) -> HvmSaveDescriptor {
        let (typecode, instance, length) = match self {
            HvmRecord::Header(h) => (HVM_SAVE_CODE_HEADER, 0, h.as_bytes().len()),
            HvmRecord::Cpu { vcpu, cpu } => (HVM_SAVE_CODE_CPU, *vcpu, cpu.as_bytes().len()),
            HvmRecord::Mtrr { vcpu, mtrr } => (HVM_SAVE_CODE_MTRR, *vcpu, mtrr.as_bytes().len()),
            HvmRecord::Other {
                typecode,
                instance,
                data,
            } => (*typecode, *instance, data.len()),
        };
        HvmSaveDescriptor {
            typecode,
            instance,
            length: u32::try_from(length).unwrap_or(u32::MAX),
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            HvmRecord::Header(h) => h.as_bytes(),
            HvmRecord::Cpu { cpu, .. } => cpu.as_bytes(),
            HvmRecord::Mtrr { mtrr, .. } => mtrr.as_bytes(),
            HvmRecord::Other { data, .. } => data,
        }
    }
}

/// An HVM context: its records in order, HEADER first, without the END record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HvmContext {
    /// The records.
    pub records: Vec<HvmRecord>,
}

/// Why bytes are not an HVM context. Offsets count from the start of the blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HvmContextError {
    /// The blob ends inside a record's descriptor.
    #[error("HVM context: truncated record descriptor at offset {offset}")]
    TruncatedDescriptor {
        /// Where the descriptor starts.
        offset: usize,
    },
    /// A record's length runs past the end of the blob.
    #[error(
        "HVM context: record type {typecode} at offset {offset} claims {length} bytes, only \
         {available} follow"
    )]
    TruncatedRecord {
        /// Where the record's descriptor starts.
        offset: usize,
        /// Its type code.
        typecode: u16,
        /// The length it claims.
        length: u32,
        /// Bytes left after its descriptor.
        available: usize,
    },
    /// A record this module types has the wrong length.
    #[error(
        "HVM context: record type {typecode} at offset {offset} is {length} bytes, expected \
         {expected}"
    )]
    BadLength {
        /// Where the record's descriptor starts.
        offset: usize,
        /// Its type code.
        typecode: u16,
        /// Its length.
        length: u32,
        /// The length of its type.
        expected: usize,
    },
    /// The first record is not a HEADER.
    #[error("HVM context: the first record is type {typecode}, not HEADER (1)")]
    MissingHeader {
        /// The first record's type code (0 for an empty blob).
        typecode: u16,
    },
    /// The blob has no END record.
    #[error("HVM context: no END record")]
    MissingEnd,
    /// Bytes follow the END record.
    #[error("HVM context: {extra} bytes after the END record at offset {offset}")]
    TrailingBytes {
        /// Where the END record starts.
        offset: usize,
        /// How many bytes follow it.
        extra: usize,
    },
}

const DESC: usize = core::mem::size_of::<HvmSaveDescriptor>();

impl HvmContext {
    /// Decode a blob (as `XEN_DOMCTL_gethvmcontext` returns it).
    ///
    /// # Errors
    ///
    /// An [`HvmContextError`] naming what is wrong and where.
    pub fn decode(bytes: &[u8]) -> Result<Self, HvmContextError> {
        let mut records = Vec::new();
        let mut at = 0usize;
        loop {
            let rest = bytes.get(at..).unwrap_or(&[]);
            let Ok((desc, body)) = HvmSaveDescriptor::read_from_prefix(rest) else {
                return Err(if rest.is_empty() {
                    HvmContextError::MissingEnd
                } else {
                    HvmContextError::TruncatedDescriptor { offset: at }
                });
            };
            let len = usize::try_from(desc.length).unwrap_or(usize::MAX);
            let Some(data) = body.get(..len) else {
                return Err(HvmContextError::TruncatedRecord {
                    offset: at,
                    typecode: desc.typecode,
                    length: desc.length,
                    available: body.len(),
                });
            };
            if records.is_empty() && desc.typecode != HVM_SAVE_CODE_HEADER {
                return Err(HvmContextError::MissingHeader {
                    typecode: desc.typecode,
                });
            }
            let bad_len = |expected: usize| HvmContextError::BadLength {
                offset: at,
                typecode: desc.typecode,
                length: desc.length,
                expected,
            };
            let record = match desc.typecode {
                HVM_SAVE_CODE_END => {
                    if len != 0 {
                        return Err(bad_len(0));
                    }
                    let extra = body.len();
                    if extra != 0 {
                        return Err(HvmContextError::TrailingBytes { offset: at, extra });
                    }
                    return Ok(Self { records });
                }
                HVM_SAVE_CODE_HEADER => HvmRecord::Header(
                    HvmSaveHeader::read_from_bytes(data)
                        .map_err(|_| bad_len(core::mem::size_of::<HvmSaveHeader>()))?,
                ),
                HVM_SAVE_CODE_CPU => HvmRecord::Cpu {
                    vcpu: desc.instance,
                    cpu: Box::new(
                        HvmHwCpu::read_from_bytes(data)
                            .map_err(|_| bad_len(core::mem::size_of::<HvmHwCpu>()))?,
                    ),
                },
                HVM_SAVE_CODE_MTRR => HvmRecord::Mtrr {
                    vcpu: desc.instance,
                    mtrr: Box::new(
                        HvmHwMtrr::read_from_bytes(data)
                            .map_err(|_| bad_len(core::mem::size_of::<HvmHwMtrr>()))?,
                    ),
                },
                typecode => HvmRecord::Other {
                    typecode,
                    instance: desc.instance,
                    data: data.to_vec(),
                },
            };
            records.push(record);
            at += DESC + len;
        }
    }

    /// Encode the records and an END record.
    pub fn encode(&self) -> Vec<u8> {
        let size = self
            .records
            .iter()
            .map(|r| DESC + r.body().len())
            .sum::<usize>()
            + DESC;
        let mut out = Vec::with_capacity(size);
        for r in &self.records {
            out.extend_from_slice(r.descriptor().as_bytes());
            out.extend_from_slice(r.body());
        }
        out.extend_from_slice(HvmSaveDescriptor::default().as_bytes());
        out
    }

    /// The HEADER record, if the first record is one.
    pub fn header(&self) -> Option<&HvmSaveHeader> {
        match self.records.first() {
            Some(HvmRecord::Header(h)) => Some(h),
            _ => None,
        }
    }

    /// The CPU record of `vcpu`, if there is one.
    pub fn cpu(&self, vcpu: u16) -> Option<&HvmHwCpu> {
        self.records.iter().find_map(|r| match r {
            HvmRecord::Cpu { vcpu: v, cpu } if *v == vcpu => Some(&**cpu),
            _ => None,
        })
    }

    /// The MTRR record of `vcpu`, if there is one.
    pub fn mtrr(&self, vcpu: u16) -> Option<&HvmHwMtrr> {
        self.records.iter().find_map(|r| match r {
            HvmRecord::Mtrr { vcpu: v, mtrr } if *v == vcpu => Some(&**mtrr),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{HVM_FILE_MAGIC, HVM_FILE_VERSION};

    fn sample() -> HvmContext {
        let mut cpu = HvmHwCpu::zeroed();
        cpu.rip = 0x100_0850;
        cpu.cr0 = X86_CR0_PE | X86_CR0_ET;
        HvmContext {
            records: vec![
                HvmRecord::Header(HvmSaveHeader {
                    magic: HVM_FILE_MAGIC,
                    version: HVM_FILE_VERSION,
                    changeset: 7,
                    cpuid: 0x806f8,
                    gtsc_khz: 1_000_000,
                }),
                HvmRecord::Mtrr {
                    vcpu: 1,
                    mtrr: Box::new(HvmHwMtrr {
                        msr_mtrr_def_type: 0x806,
                        ..Default::default()
                    }),
                },
                HvmRecord::Other {
                    typecode: 5,
                    instance: 1,
                    data: vec![1, 2, 3],
                },
                HvmRecord::Cpu {
                    vcpu: 0,
                    cpu: Box::new(cpu),
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_finds_records() {
        let ctx = sample();
        let bytes = ctx.encode();
        let back = HvmContext::decode(&bytes).unwrap();
        assert_eq!(back, ctx);
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.cpu(0).unwrap().rip, 0x100_0850);
        assert!(back.cpu(1).is_none());
        assert_eq!(back.mtrr(1).unwrap().msr_mtrr_def_type, 0x806);
        assert_eq!(back.header().unwrap().magic, HVM_FILE_MAGIC);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(HvmContext::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_inputs_name_what_is_wrong() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(matches!(
            HvmContext::decode(&bytes),
            Err(HvmContextError::TrailingBytes { extra: 1, .. })
        ));
        // A CPU record one byte short.
        let short = HvmContext {
            records: vec![
                HvmRecord::Header(HvmSaveHeader::default()),
                HvmRecord::Other {
                    typecode: HVM_SAVE_CODE_CPU,
                    instance: 0,
                    data: vec![0; 1031],
                },
            ],
        };
        assert_eq!(
            HvmContext::decode(&short.encode()),
            Err(HvmContextError::BadLength {
                offset: 32,
                typecode: HVM_SAVE_CODE_CPU,
                length: 1031,
                expected: 1032
            })
        );
        // No header.
        assert_eq!(
            HvmContext::decode(&HvmContext::default().encode()),
            Err(HvmContextError::MissingHeader { typecode: 0 })
        );
        // A huge claimed length allocates nothing.
        let mut huge = HvmSaveDescriptor {
            typecode: HVM_SAVE_CODE_HEADER,
            instance: 0,
            length: u32::MAX,
        }
        .as_bytes()
        .to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(
            HvmContext::decode(&huge),
            Err(HvmContextError::TruncatedRecord { available: 16, .. })
        ));
    }
}
