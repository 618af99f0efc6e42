//! The xenstore wire protocol of Xen 4.17 (`xen/include/public/io/xs_wire.h`).
//!
//! Every message, in either direction, is a 16-byte header ([`Header`]: type, request id,
//! transaction id, payload length, each a native-endian `u32`) followed by at most
//! [`PAYLOAD_MAX`] bytes of payload. Payloads are mostly nul-terminated strings; errors travel as
//! errno *names* ("EINVAL"), not numbers.
//!
//! Decoding never panics: [`parse_frame`] takes any byte slice and answers "need more bytes", a
//! frame, or a [`WireError`].

use nix::errno::Errno;

/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// The largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// The longest absolute path a client should send (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// The longest relative path a client should send (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;
/// `XS_WRITE_NONE` and friends are not used by Xen 4.17 but stay here for completeness.
pub const WRITE_NONE: &str = "NONE";
/// Write flag: create the node.
pub const WRITE_CREATE: &str = "CREATE";
/// Write flag: create the node, failing if it exists.
pub const WRITE_CREATE_EXCL: &str = "CREATE|EXCL";

/// A message type (`enum xsd_sockmsg_type`). Unknown values stay representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`): implementation-specific daemon commands.
    Control,
    /// `XS_DIRECTORY`: list the children of a node.
    Directory,
    /// `XS_READ`: read a node's value.
    Read,
    /// `XS_GET_PERMS`: read a node's permissions.
    GetPerms,
    /// `XS_WATCH`: register a watch.
    Watch,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch,
    /// `XS_TRANSACTION_START`.
    TransactionStart,
    /// `XS_TRANSACTION_END`: commit (`T`) or abort (`F`).
    TransactionEnd,
    /// `XS_INTRODUCE`: tell the daemon about a domain.
    Introduce,
    /// `XS_RELEASE`: forget a domain.
    Release,
    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    GetDomainPath,
    /// `XS_WRITE`: write a node's value, creating it and missing parents.
    Write,
    /// `XS_MKDIR`: make sure a node exists.
    Mkdir,
    /// `XS_RM`: remove a node and its children.
    Rm,
    /// `XS_SET_PERMS`: set a node's permissions.
    SetPerms,
    /// `XS_WATCH_EVENT`: an unsolicited watch event from the daemon.
    WatchEvent,
    /// `XS_ERROR`: an error reply, carrying an errno name.
    Error,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced,
    /// `XS_RESUME`: re-arm @releaseDomain for a domain.
    Resume,
    /// `XS_SET_TARGET`: let one domain act for another (device models).
    SetTarget,
    /// `XS_RESET_WATCHES`: drop all watches and transactions of the caller.
    ResetWatches,
    /// `XS_DIRECTORY_PART`: list children from a byte offset, for long lists.
    DirectoryPart,
    /// Any other value, kept as sent.
    Unknown(u32),
}

impl MsgType {
    /// Decodes a wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Control,
            1 => Self::Directory,
            2 => Self::Read,
            3 => Self::GetPerms,
            4 => Self::Watch,
            5 => Self::Unwatch,
            6 => Self::TransactionStart,
            7 => Self::TransactionEnd,
            8 => Self::Introduce,
            9 => Self::Release,
            10 => Self::GetDomainPath,
            11 => Self::Write,
            12 => Self::Mkdir,
            13 => Self::Rm,
            14 => Self::SetPerms,
            15 => Self::WatchEvent,
            16 => Self::Error,
            17 => Self::IsDomainIntroduced,
            18 => Self::Resume,
            19 => Self::SetTarget,
            // 20 was XS_RESTRICT, removed in Xen 4.9.
            21 => Self::ResetWatches,
            22 => Self::DirectoryPart,
            other => Self::Unknown(other),
        }
    }

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Control => 0,
            Self::Directory => 1,
            Self::Read => 2,
            Self::GetPerms => 3,
            Self::Watch => 4,
            Self::Unwatch => 5,
            Self::TransactionStart => 6,
            Self::TransactionEnd => 7,
            Self::Introduce => 8,
            Self::Release => 9,
            Self::GetDomainPath => 10,
            Self::Write => 11,
            Self::Mkdir => 12,
            Self::Rm => 13,
            Self::SetPerms => 14,
            Self::WatchEvent => 15,
            Self::Error => 16,
            Self::IsDomainIntroduced => 17,
            Self::Resume => 18,
            Self::SetTarget => 19,
            Self::ResetWatches => 21,
            Self::DirectoryPart => 22,
            Self::Unknown(v) => v,
        }
    }

    /// The name xenstored uses in its logs ("READ", "DIRECTORY_PART", ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Control => "CONTROL",
            Self::Directory => "DIRECTORY",
            Self::Read => "READ",
            Self::GetPerms => "GET_PERMS",
            Self::Watch => "WATCH",
            Self::Unwatch => "UNWATCH",
            Self::TransactionStart => "TRANSACTION_START",
            Self::TransactionEnd => "TRANSACTION_END",
            Self::Introduce => "INTRODUCE",
            Self::Release => "RELEASE",
            Self::GetDomainPath => "GET_DOMAIN_PATH",
            Self::Write => "WRITE",
            Self::Mkdir => "MKDIR",
            Self::Rm => "RM",
            Self::SetPerms => "SET_PERMS",
            Self::WatchEvent => "WATCH_EVENT",
            Self::Error => "ERROR",
            Self::IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            Self::Resume => "RESUME",
            Self::SetTarget => "SET_TARGET",
            Self::ResetWatches => "RESET_WATCHES",
            Self::DirectoryPart => "DIRECTORY_PART",
            Self::Unknown(_) => "**UNKNOWN**",
        }
    }
}

/// The message header (`struct xsd_sockmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub ty: MsgType,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Decodes a header from exactly [`HEADER_LEN`] bytes.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            ty: MsgType::from_u32(word(0)),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.ty.to_u32().to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }
}

/// What is wrong with bytes that claim to be a xenstore message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header announces a payload above [`PAYLOAD_MAX`]; xenstored drops such connections.
    #[error("message payload of {len} bytes exceeds the {PAYLOAD_MAX}-byte limit")]
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
}

/// One complete message borrowed from a receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload (`header.len` bytes).
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies in the buffer.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Parses the first message in `buf`.
///
/// Returns `Ok(None)` when more bytes are needed.
///
/// # Errors
///
/// [`WireError::PayloadTooLong`] as soon as a header announcing more than [`PAYLOAD_MAX`] bytes is
/// complete: the stream cannot be resynchronised after that.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, WireError> {
    let Some(hdr) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::from_bytes(hdr);
    let len = header.len as usize;
    if len > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong { len: header.len });
    }
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .map(|payload| Frame { header, payload }))
}

/// Appends one encoded message to `out`; `parts` are concatenated to form the payload.
///
/// # Errors
///
/// `E2BIG` when the payload would exceed [`PAYLOAD_MAX`]; `out` is then left unchanged.
pub fn encode_into(
    out: &mut Vec<u8>,
    ty: MsgType,
    req_id: u32,
    tx_id: u32,
    parts: &[&[u8]],
) -> Result<(), Errno> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(Errno::E2BIG);
    }
    let len32 = u32::try_from(len).map_err(|_| Errno::E2BIG)?;
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(
        &Header {
            ty,
            req_id,
            tx_id,
            len: len32,
        }
        .to_bytes(),
    );
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

/// Encodes one message into a new buffer. See [`encode_into`].
///
/// # Errors
///
/// `E2BIG` when the payload would exceed [`PAYLOAD_MAX`].
pub fn encode(ty: MsgType, req_id: u32, tx_id: u32, parts: &[&[u8]]) -> Result<Vec<u8>, Errno> {
    let mut v = Vec::new();
    encode_into(&mut v, ty, req_id, tx_id, parts)?;
    Ok(v)
}

/// The errors xenstored reports, in `xs_wire.h` order (the order matters: unknown errors are sent
/// as the first entry, EINVAL).
pub const ERRORS: [(Errno, &str); 16] = [
    (Errno::EINVAL, "EINVAL"),
    (Errno::EACCES, "EACCES"),
    (Errno::EEXIST, "EEXIST"),
    (Errno::EISDIR, "EISDIR"),
    (Errno::ENOENT, "ENOENT"),
    (Errno::ENOMEM, "ENOMEM"),
    (Errno::ENOSPC, "ENOSPC"),
    (Errno::EIO, "EIO"),
    (Errno::ENOTEMPTY, "ENOTEMPTY"),
    (Errno::ENOSYS, "ENOSYS"),
    (Errno::EROFS, "EROFS"),
    (Errno::EBUSY, "EBUSY"),
    (Errno::EAGAIN, "EAGAIN"),
    (Errno::EISCONN, "EISCONN"),
    (Errno::E2BIG, "E2BIG"),
    (Errno::EPERM, "EPERM"),
];

/// The wire name of `e`; errors xenstored cannot name travel as "EINVAL", as in C xenstored.
pub fn errno_name(e: Errno) -> &'static str {
    ERRORS
        .iter()
        .find(|(n, _)| *n == e)
        .map_or("EINVAL", |(_, s)| s)
}

/// Decodes an `XS_ERROR` payload (the name, normally nul-terminated). Unknown names give EINVAL,
/// as in libxenstore.
pub fn errno_from_payload(payload: &[u8]) -> Errno {
    let name = payload.split(|&b| b == 0).next().unwrap_or_default();
    ERRORS
        .iter()
        .find(|(_, s)| s.as_bytes() == name)
        .map_or(Errno::EINVAL, |(n, _)| *n)
}

/// Iterates over the nul-terminated strings of a payload, ignoring trailing bytes without a
/// terminating nul (C xenstored's `get_strings`).
pub fn strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = match payload.iter().rposition(|&b| b == 0) {
        Some(last) => &payload[..last],
        None => &[][..],
    };
    let has_any = payload.contains(&0);
    complete
        .split(|&b| b == 0)
        .take(if has_any { usize::MAX } else { 0 })
}

/// Number of nul-terminated strings in a payload.
pub fn count_strings(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == 0).count()
}

/// The single argument of a payload that must be exactly one string ending in its only nul.
pub fn one_arg(payload: &[u8]) -> Option<&[u8]> {
    match payload.split_last() {
        Some((0, rest)) if !rest.contains(&0) => Some(rest),
        _ => None,
    }
}

/// Parses an unsigned decimal the way C's `atoi` does for xenstored arguments: leading digits,
/// anything after them ignored, 0 when there are none. Saturates instead of overflowing.
pub fn atou(s: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in s.iter().skip_while(|b| b.is_ascii_whitespace()) {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    v
}

/// A watch event payload: `<path>|<token>|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEventPayload<'a> {
    /// The path that changed (relative if the watch was registered relative).
    pub path: &'a [u8],
    /// The watch's token.
    pub token: &'a [u8],
}

/// Parses a `WATCH_EVENT` payload; `None` if it lacks two strings.
pub fn parse_watch_event(payload: &[u8]) -> Option<WatchEventPayload<'_>> {
    let mut it = strings(payload);
    let path = it.next()?;
    let token = it.next()?;
    Some(WatchEventPayload { path, token })
}

/// A `DIRECTORY_PART` reply: the node's generation and a chunk of the child list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryPart<'a> {
    /// The node generation, as sent (decimal).
    pub generation: &'a [u8],
    /// The children in this chunk.
    pub children: Vec<&'a [u8]>,
    /// True when this chunk ends the list (the daemon appends an empty string).
    pub complete: bool,
}

/// Parses a `DIRECTORY_PART` reply; `None` if there is no generation string.
pub fn parse_directory_part(payload: &[u8]) -> Option<DirectoryPart<'_>> {
    let gen_end = payload.iter().position(|&b| b == 0)?;
    let generation = &payload[..gen_end];
    let rest = &payload[gen_end + 1..];
    let mut children: Vec<&[u8]> = strings(rest).collect();
    // The list ends with an empty string ("...|last||"), or is just one empty string.
    let complete = matches!(children.last(), Some(c) if c.is_empty());
    if complete {
        children.pop();
    }
    Some(DirectoryPart {
        generation,
        children,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_round_trip_and_match_xs_wire_h() {
        // Values from xs_wire.h: XS_DIRECTORY_PART is XS_SET_TARGET + 3, 20 is unused.
        assert_eq!(MsgType::SetTarget.to_u32(), 19);
        assert_eq!(MsgType::ResetWatches.to_u32(), 21);
        assert_eq!(MsgType::DirectoryPart.to_u32(), 22);
        assert_eq!(MsgType::from_u32(20), MsgType::Unknown(20));
        assert_eq!(MsgType::from_u32(0xffff), MsgType::Unknown(0xffff));
        for v in 0..40 {
            assert_eq!(MsgType::from_u32(v).to_u32(), v);
        }
    }

    #[test]
    fn header_layout_is_four_native_words() {
        let h = Header {
            ty: MsgType::Read,
            req_id: 7,
            tx_id: 9,
            len: 5,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..4], &2u32.to_ne_bytes());
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(&b[8..12], &9u32.to_ne_bytes());
        assert_eq!(&b[12..16], &5u32.to_ne_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn frames_need_whole_messages_and_reject_long_payloads() {
        let msg = encode(MsgType::Read, 1, 0, &[b"/a\0"]).unwrap();
        for cut in 0..msg.len() {
            assert_eq!(parse_frame(&msg[..cut]), Ok(None), "cut at {cut}");
        }
        let f = parse_frame(&msg).unwrap().unwrap();
        assert_eq!(f.payload, b"/a\0");
        assert_eq!(f.wire_len(), msg.len());

        let mut long = Header {
            ty: MsgType::Write,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        }
        .to_bytes();
        assert_eq!(
            parse_frame(&long),
            Err(WireError::PayloadTooLong { len: 4097 })
        );
        long[12..16].copy_from_slice(&4096u32.to_ne_bytes());
        assert_eq!(parse_frame(&long), Ok(None));
    }

    #[test]
    fn encode_enforces_payload_limit() {
        let big = vec![b'x'; PAYLOAD_MAX];
        assert!(encode(MsgType::Write, 0, 0, &[&big]).is_ok());
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode_into(&mut out, MsgType::Write, 0, 0, &[&big, b"y"]),
            Err(Errno::E2BIG)
        );
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn errno_names_round_trip_and_unknown_is_einval() {
        for (e, name) in ERRORS {
            assert_eq!(errno_name(e), name);
            let mut p = name.as_bytes().to_vec();
            p.push(0);
            assert_eq!(errno_from_payload(&p), e);
        }
        assert_eq!(errno_name(Errno::ENOTTY), "EINVAL");
        assert_eq!(errno_from_payload(b"EWHAT\0"), Errno::EINVAL);
        assert_eq!(errno_from_payload(b""), Errno::EINVAL);
    }

    #[test]
    fn strings_follow_get_strings() {
        assert_eq!(
            strings(b"a\0bc\0").collect::<Vec<_>>(),
            vec![&b"a"[..], b"bc"]
        );
        assert_eq!(strings(b"a\0bc").collect::<Vec<_>>(), vec![&b"a"[..]]);
        assert_eq!(strings(b"abc").count(), 0);
        assert_eq!(strings(b"").count(), 0);
        assert_eq!(strings(b"\0").collect::<Vec<_>>(), vec![&b""[..]]);
        assert_eq!(count_strings(b"a\0\0b"), 2);
        assert_eq!(one_arg(b"/x\0"), Some(&b"/x"[..]));
        assert_eq!(one_arg(b"/x\0y\0"), None);
        assert_eq!(one_arg(b"/x"), None);
        assert_eq!(one_arg(b""), None);
    }

    #[test]
    fn atou_is_forgiving_like_atoi() {
        assert_eq!(atou(b"12"), 12);
        assert_eq!(atou(b" 7x"), 7);
        assert_eq!(atou(b"x"), 0);
        assert_eq!(atou(b"99999999999999"), u32::MAX);
    }

    #[test]
    fn directory_part_replies_parse() {
        let p = parse_directory_part(b"42\0a\0b\0\0").unwrap();
        assert_eq!(p.generation, b"42");
        assert_eq!(p.children, vec![&b"a"[..], b"b"]);
        assert!(p.complete);
        let p = parse_directory_part(b"42\0a\0b\0").unwrap();
        assert!(!p.complete);
        let p = parse_directory_part(b"7\0\0").unwrap();
        assert!(p.children.is_empty() && p.complete);
        assert_eq!(parse_directory_part(b"7"), None);
    }
}
