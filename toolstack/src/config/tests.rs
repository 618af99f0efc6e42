//! Tests of the config types, the xl.cfg parser and the stored config.

// The random generator's values are reduced modulo small bounds before narrowing.
#![allow(clippy::cast_possible_truncation)]

use super::stored::{ConfigStore, DecodeError, Error as StoredError, StoredConfig, SCHEMA_VERSION};
use super::xlcfg::{self, XlConfig};
use super::*;
use crate::lock::{CtxLock, LockDir, Locked};

/// The workspace's seeded generator (`fastrand`), so failures reproduce: the seed is printed,
/// and `RXEN_TEST_SEED` replays it.
struct Rng(fastrand::Rng);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("RXEN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        eprintln!("{test}: RXEN_TEST_SEED={seed}");
        Rng(fastrand::Rng::with_seed(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.0.usize(..items.len())]
    }
}

fn parse_dom(text: &str) -> Result<(DomainConfig, Vec<xlcfg::Warning>), xlcfg::Error> {
    XlConfig::parse("guest.cfg", text.as_bytes())?.to_domain_config()
}

fn err_of(text: &str) -> String {
    match parse_dom(text) {
        Ok(c) => panic!("{text:?} parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"# A PVH guest with everything we read.
name = "web-1"
type = 'pvh'
memory = 512
maxmem = 0x400      # 1024 MiB, in hex
vcpus = "2"
uuid = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
kernel = "/boot/vmlinuz"; ramdisk = "/boot/initrd.img"
extra = "console=hvc0 root=/dev/xvda1"
disk = [ 'format=raw, vdev=xvda, access=rw, target=/dev/vg/web-1',
         '/srv/iso/tools.iso,,hdc,cdrom',   # trailing comma next line
       ]
vif = [ "mac=00:16:3e:01:02:03, bridge=xenbr0" ]
on_poweroff = "destroy"
on_reboot = "restart"
on_crash = "coredump-restart"
on_watchdog = "preserve"
device_model_version = "qemu-xen"
"#;

#[test]
fn parses_every_supported_key() {
    let (c, warnings) = parse_dom(FULL).unwrap();
    assert_eq!(c.name, "web-1");
    assert_eq!(c.domain_type, DomainType::Pvh);
    assert_eq!(c.memory_kib, 512 * 1024);
    assert_eq!(c.maxmem_kib, 1024 * 1024);
    assert_eq!(c.vcpus, 2);
    assert_eq!(
        c.uuid.unwrap().to_string(),
        "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    );
    assert_eq!(c.kernel.as_deref(), Some("/boot/vmlinuz"));
    assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd.img"));
    assert_eq!(c.extra.as_deref(), Some("console=hvc0 root=/dev/xvda1"));
    assert_eq!(c.disks.len(), 2);
    assert_eq!(c.disks[0].target.as_deref(), Some("/dev/vg/web-1"));
    assert_eq!(c.disks[0].vdev, "xvda");
    assert!(!c.disks[0].cdrom);
    assert_eq!(c.disks[1].vdev, "hdc");
    assert!(c.disks[1].cdrom);
    assert_eq!(c.disks[1].access, DiskAccess::ReadOnly);
    assert_eq!(c.vifs[0].mac(), Some("00:16:3e:01:02:03"));
    assert_eq!(c.vifs[0].bridge(), Some("xenbr0"));
    assert_eq!(c.on_poweroff, Action::Destroy);
    assert_eq!(c.on_reboot, Action::Restart);
    assert_eq!(c.on_crash, Action::CoredumpRestart);
    assert_eq!(c.on_watchdog, Action::Preserve);
    assert_eq!(
        c.unknown.get("device_model_version"),
        Some(&CfgValue::String("qemu-xen".into()))
    );
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings[0].to_string(),
        "guest.cfg:18:24: warning: unknown key \"device_model_version\" is not used (kept as \
         written)"
    );
}

#[test]
fn defaults_are_xls() {
    let (c, w) = parse_dom("name=\"tiny\"").unwrap();
    assert_eq!(c, DomainConfig::new("tiny"));
    assert!(w.is_empty());
    assert_eq!(c.domain_type, DomainType::Pv);
    assert_eq!(
        (c.memory_kib, c.maxmem_kib, c.vcpus),
        (32 * 1024, 32 * 1024, 1)
    );
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash, c.on_watchdog),
        (
            Action::Destroy,
            Action::Restart,
            Action::Destroy,
            Action::Destroy
        )
    );
    // maxmem follows memory unless given.
    let (c, _) = parse_dom("name='m'\nmemory=300\n").unwrap();
    assert_eq!(c.maxmem_kib, 300 * 1024);
    // The deprecated builder="generic" means PV.
    let (c, _) = parse_dom("name='b'\nbuilder='generic'\n").unwrap();
    assert_eq!(c.domain_type, DomainType::Pv);
}

#[test]
fn syntax_corners() {
    // Later assignments win; `;` separates; octal; `+=` concatenates strings and lists.
    let text = "name='a'; name = \"b\"\nmemory = 010 ; vcpus=3\nextra = 'x'\nextra += \" y\"\n\
                disk = ['/a,,xvda']\ndisk += [\n '/b,,xvdb',\n]\n# comment at the end";
    let (c, _) = parse_dom(text).unwrap();
    assert_eq!(c.name, "b");
    assert_eq!(c.memory_kib, 8 * 1024);
    assert_eq!(c.vcpus, 3);
    assert_eq!(c.extra.as_deref(), Some("x y"));
    let vdevs: Vec<&str> = c.disks.iter().map(|d| d.vdev.as_str()).collect();
    assert_eq!(vdevs, ["xvda", "xvdb"]);
    // Empty lists, nested lists (kept for unknown keys), CRLF line ends, escapes.
    let text = "name='n'\r\ndisk=[]\r\nx.y_z = [ [1, 'two'], [], ]\r\nextra='a\\tb\\\\c\\'d\\x41\\101\\n'\r\n";
    let (c, w) = parse_dom(text).unwrap();
    assert!(c.disks.is_empty());
    assert_eq!(c.extra.as_deref(), Some("a\tb\\c'dAA\n"));
    assert_eq!(
        c.unknown["x.y_z"],
        CfgValue::List(vec![
            CfgValue::List(vec![
                CfgValue::Number("1".into()),
                CfgValue::String("two".into())
            ]),
            CfgValue::List(vec![]),
        ])
    );
    assert_eq!(w.len(), 1);
    // UTF-8 in strings, columns counted in characters.
    let e = err_of("extra = \"é\" memory");
    assert_eq!(
        e,
        "guest.cfg:1:13: expected \";\" or the end of the line after the value of \"extra\", \
         found the word \"memory\""
    );
}

#[test]
fn errors_name_file_line_column_and_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        (
            "name = \"g\"\n\nmemory = \"lots\"\n",
            r#"guest.cfg:3:10: expected a number for "memory", found "lots""#,
        ),
        (
            "name = \"g\"\nvcpus 2\n",
            r#"guest.cfg:2:7: expected "=" or "+=" after "vcpus", found a number"#,
        ),
        (
            "name = \n",
            r#"guest.cfg:1:8: expected a value (a "string", a number or a [list]), found the end of the line"#,
        ),
        (
            "name = 'g'\ndisk = [ 'a,,xvda' 'b' ]\n",
            r#"guest.cfg:2:20: expected "," or "]" in a list, found a string"#,
        ),
        (
            "name = 'g\n",
            "guest.cfg:1:8: unterminated string: expected a closing ' on the same line",
        ),
        (
            "Name = 'g'\n",
            "guest.cfg:1:1: unexpected capital letter (keys are lower case: a-z, 0-9, '.', '_')",
        ),
        (
            "name = 'g'\nmemory = 5 * 2\n",
            r#"guest.cfg:2:12: unexpected '*'"#,
        ),
        (
            "name = 'g'\nmemory = -5\n",
            r#"guest.cfg:2:10: unexpected '-' (xl.cfg is not Python: values are "strings", numbers or [lists])"#,
        ),
        (
            "name = 'g'\nmemory = '-5'\n",
            r#"guest.cfg:2:10: expected a size in MiB for "memory", found -5"#,
        ),
        (
            "name = 'g'\nmemory = 0x\n",
            r#"guest.cfg:2:10: expected a number for "memory", found "0x""#,
        ),
        (
            "name = 'g'\nmemory = 99999999999999999999\n",
            r#"guest.cfg:2:10: expected a number for "memory", found "99999999999999999999""#,
        ),
        (
            "name = 'g'\nmemory = 5\nmemory += 6\n",
            r#"guest.cfg:2:10: expected a number for "memory", but += cannot be used with numbers"#,
        ),
        (
            "name = 'g'\nmemory = [5]\n",
            r#"guest.cfg:2:10: expected a number for "memory", found a list"#,
        ),
        (
            "name = ['g']\n",
            r#"guest.cfg:1:8: expected a string for "name", found a list"#,
        ),
        (
            "name = 'g'\ndisk = 'x,,xvda'\n",
            r#"guest.cfg:2:8: expected a list of strings for "disk" (disk = [ "...", ... ]), found a string"#,
        ),
        (
            "name = 'g'\ndisk = [ '/x' ]\n",
            r#"guest.cfg:2:10: bad disk spec "/x": no vdev (the guest's device name) is given"#,
        ),
        (
            "name = 'g'\nvif = [ 'mac=zz' ]\n",
            r#"guest.cfg:2:9: bad vif spec "mac=zz": expected a MAC address like 00:16:3e:12:34:56, found "zz""#,
        ),
        (
            "name = 'g'\ntype = 'hvm'\n",
            r#"guest.cfg:2:8: expected pv or pvh for "type", found "hvm" (HVM guests are not supported)"#,
        ),
        (
            "name = 'g'\ntype = 'pv'\nbuilder = 'hvm'\n",
            r#"guest.cfg:3:11: expected "generic" for the deprecated "builder" (or use type = "pv" or "pvh"), found "hvm""#,
        ),
        (
            "name = 'g'\non_crash = 'explode'\n",
            r#"guest.cfg:2:12: expected destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart or soft-reset for "on_crash", found "explode""#,
        ),
        (
            "name = 'g'\nuuid = 'not-a-uuid'\n",
            r#"guest.cfg:2:8: expected a UUID like 01234567-89ab-cdef-0123-456789abcdef for "uuid", found "not-a-uuid""#,
        ),
        (
            "name = 'g'\nmemory = 512\nmaxmem = 256\n",
            "guest.cfg:3:10: memory (524288 KiB) is above maxmem (262144 KiB)",
        ),
        (
            "name = 'g'\nvcpus = 0\n",
            "guest.cfg:2:9: vcpus must be at least 1",
        ),
        (
            "name = 'g'\nmemory = 0\n",
            "guest.cfg:2:10: memory must be at least 1 MiB",
        ),
        (
            "name = '1234'\n",
            r#"guest.cfg:1:8: invalid domain name "1234": it must not be all digits (it would read as a domain id)"#,
        ),
        (
            "name = 'a b'\n",
            r#"guest.cfg:1:8: invalid domain name "a b": only letters, digits, '.', '_' and '-' are allowed"#,
        ),
        (
            "memory = 5\n",
            r#"guest.cfg: no "name" is given (expected name = "...")"#,
        ),
        (
            "name = 'a\\q'\n",
            r#"guest.cfg:1:10: unknown escape in a string (expected one of \" \' \\ \a \b \f \n \r \t \v \xHH \NNN), found \q"#,
        ),
        (
            "name = 'a\\x4'\n",
            r#"guest.cfg:1:10: expected two hex digits after \x in a string"#,
        ),
        (
            "name = 'a\\0'\n",
            r#"guest.cfg:1:10: a string cannot contain NUL (\0)"#,
        ),
        (
            "name = 'a\0'\n",
            "guest.cfg:1:10: a string cannot contain NUL",
        ),
        (
            "name = 'a\\xff'\n",
            "guest.cfg:1:8: the string is not valid UTF-8",
        ),
        (
            "name = 'g'\nextra = 'a'\nextra += ['b']\n",
            r#"guest.cfg:3:10: cannot append with += to "extra": one of the values is a list and the other is not"#,
        ),
        (
            "= 5\n",
            r#"guest.cfg:1:1: expected a setting (key = value), found "=""#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&err_of(text), want, "for {text:?}");
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("x = {}{}\n", "[".repeat(100), "]".repeat(100));
    let e = XlConfig::parse("deep.cfg", deep.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "deep.cfg:1:37: lists are nested more than 32 deep"
    );
}

#[test]
fn command_line_overrides() {
    let mut cfg = XlConfig::parse("guest.cfg", b"name = 'g'\nmemory = 128\n").unwrap();
    cfg.apply_override("name=\"x\"").unwrap();
    cfg.apply_override("memory=256; vcpus=4").unwrap();
    let (c, _) = cfg.to_domain_config().unwrap();
    assert_eq!(
        (c.name.as_str(), c.memory_kib, c.vcpus),
        ("x", 256 * 1024, 4)
    );
    // An error in an override names the command line.
    let e = cfg.apply_override("memory=").unwrap_err();
    assert_eq!(
        e.to_string(),
        "command line:1:8: expected a value (a \"string\", a number or a [list]), found the end \
         of the file"
    );
    // A bad value from an override is located there too.
    cfg.apply_override("maxmem=1").unwrap();
    assert_eq!(
        cfg.to_domain_config().unwrap_err().to_string(),
        "command line:1:8: memory (262144 KiB) is above maxmem (1024 KiB)"
    );
    // load() reads a file and applies overrides.
    let dir = std::env::temp_dir().join(format!("rxen-xlcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest.cfg");
    std::fs::write(&path, FULL).unwrap();
    let (c, w) = xlcfg::load(&path, &["vcpus=8", "on_crash='preserve'"]).unwrap();
    assert_eq!((c.vcpus, c.on_crash), (8, Action::Preserve));
    assert_eq!(w.len(), 1);
    let missing = dir.join("missing.cfg");
    let e = xlcfg::load(&missing, &[]).unwrap_err();
    assert!(
        matches!(&e, xlcfg::LoadError::Read { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn numbers_read_like_strtol_base_0() {
    use xlcfg::parse_c_long;
    for (s, v) in [
        ("0", Some(0)),
        ("10", Some(10)),
        ("010", Some(8)),
        ("0x1F", Some(31)),
        ("0X10", Some(16)),
        (" +7", Some(7)),
        ("-12", Some(-12)),
        ("9223372036854775807", Some(i64::MAX)),
        ("-9223372036854775808", Some(i64::MIN)),
        ("9223372036854775808", None),
        ("08", None),
        ("0x", None),
        ("", None),
        ("12k", None),
        ("1 ", None),
    ] {
        assert_eq!(parse_c_long(s), v, "{s:?}");
    }
}

#[test]
fn disk_specs_as_xl_disk_configuration_documents_them() {
    let equivalent = [
        "/dev/vg/guest-volume,,hda",
        "/dev/vg/guest-volume,raw,hda,rw",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    ];
    for s in equivalent {
        let d = DiskSpec::parse(s).unwrap();
        assert_eq!(d.target.as_deref(), Some("/dev/vg/guest-volume"), "{s}");
        assert_eq!(d.vdev, "hda", "{s}");
        assert_eq!(d.access, DiskAccess::ReadWrite, "{s}");
        assert!(!d.cdrom, "{s}");
    }
    for s in [
        "/root/image.iso,,hdc,cdrom",
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
    ] {
        let d = DiskSpec::parse(s).unwrap();
        assert_eq!(d.target.as_deref(), Some("/root/image.iso"), "{s}");
        assert_eq!(d.vdev, "hdc", "{s}");
        assert!(d.cdrom, "{s}");
        assert_eq!(d.access, DiskAccess::ReadOnly, "{s}");
    }
    // target= takes the rest, commas included; flags and other keys are kept.
    let d = DiskSpec::parse("vdev=xvdb, discard, backend=dom1, target=/a,b").unwrap();
    assert_eq!(d.target.as_deref(), Some("/a,b"));
    assert_eq!(
        d.other,
        [
            ("discard".into(), String::new()),
            ("backend".into(), "dom1".into())
        ]
    );
    // An empty CD-ROM drive has no target.
    assert_eq!(DiskSpec::parse(",,hdc,cdrom").unwrap().target, None);
    for (s, why) in [
        ("/a,raw,xvda,rw,extra", "too many positional parameters"),
        ("/a,,xvda,rx", "expected access rw, w, ro or r"),
        ("vdev=a,vdev=b", "vdev is given twice"),
        ("/a", "no vdev"),
        ("=x,,xvda", "a parameter has no name"),
        ("/a,,xvda,devtype=floppy", "expected devtype=cdrom"),
    ] {
        let e = DiskSpec::parse(s).unwrap_err();
        assert!(e.reason.contains(why), "{s}: {e}");
    }
    // Serialised as the spec string, so the fields always agree with it.
    let d = DiskSpec::parse("/a,,xvda").unwrap();
    assert_eq!(serde_json::to_string(&d).unwrap(), "\"/a,,xvda\"");
    assert!(serde_json::from_str::<DiskSpec>("\"/a\"").is_err());
}

#[test]
fn vif_specs() {
    let v = VifSpec::parse(" mac=00:16:3E:aa:bb:cc , bridge = xenbr0,model=e1000 ").unwrap();
    assert_eq!(v.mac(), Some("00:16:3E:aa:bb:cc"));
    assert_eq!(v.bridge(), Some("xenbr0"));
    assert_eq!(v.get("model"), Some("e1000"));
    assert_eq!(v.get("ip"), None);
    assert!(VifSpec::parse("").unwrap().settings.is_empty());
    for (s, why) in [
        ("bridge", "expected key=value"),
        ("mac=00:16:3e:01:02", "expected a MAC address"),
        ("bridge=a,bridge=b", "bridge is given twice"),
        ("=x", "has no name"),
    ] {
        assert!(VifSpec::parse(s).unwrap_err().reason.contains(why), "{s}");
    }
}

#[test]
fn channel_specs_and_the_channel_key() {
    let (c, _) = parse_dom(
        "name = 'g'\nchannel = [ 'name=org.qemu.guest_agent.0,connection=pty', \
         'connection=pty, name=b, devid=5' ]\n",
    )
    .unwrap();
    assert_eq!(c.consoles.len(), 2);
    assert_eq!(c.consoles[0].get("name"), Some("org.qemu.guest_agent.0"));
    assert_eq!(c.consoles[1].get("devid"), Some("5"));
    // The primary console is every domain's: it is not a channel, and is not rendered.
    let mut with_primary = c.clone();
    with_primary.consoles.insert(
        0,
        VifSpec::parse("type=xenconsoled,output=pty,devid=0").unwrap(),
    );
    let text = xlcfg::render(&with_primary);
    assert_eq!(text.matches("name=").count(), 2, "{text}");
    assert!(!text.contains("xenconsoled"), "{text}");
    assert_eq!(parse_dom(&text).unwrap().0, c);
    for (spec, why) in [
        ("connection=pty", "a channel needs a name"),
        ("name=,connection=pty", "a channel needs a name"),
        ("name=a", "a channel needs connection=pty"),
        (
            "name=a,connection=socket,path=/s",
            "connection=socket needs a device model",
        ),
        (
            "name=a,connection=tcp",
            "expected connection=pty, found \"tcp\"",
        ),
        (
            "name=a,connection=pty,devid=0",
            "devid 0 is the primary console",
        ),
        ("name=a,connection=pty,devid=x", "devid must be a number"),
        ("name=a,connection=pty,name=b", "name is given twice"),
    ] {
        let e = VifSpec::parse_channel(spec).unwrap_err();
        assert!(e.reason.contains(why), "{spec}: {e}");
    }
    let e = err_of("name = 'g'\nchannel = [ 'name=a' ]\n");
    assert!(e.contains("bad channel spec \"name=a\""), "{e}");
}

#[test]
fn names_and_actions() {
    for ok in ["a", "Domain-0", "web_1.example", &"x".repeat(64)] {
        validate_name(ok).unwrap();
    }
    for bad in ["", "-x", ".x", "42", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
    for a in Action::ALL {
        assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            format!("\"{}\"", a.as_str())
        );
    }
    assert!("Restart".parse::<Action>().is_err());
    assert_eq!("pvh".parse::<DomainType>().unwrap(), DomainType::Pvh);
    assert!("hvm".parse::<DomainType>().is_err());
}

fn random_string(rng: &mut Rng, alphabet: &[char], max: u64) -> String {
    (0..rng.below(max)).map(|_| *rng.pick(alphabet)).collect()
}

fn random_config(rng: &mut Rng) -> DomainConfig {
    let name_chars: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain(['-', '_', '.'])
        .collect();
    let any_chars: Vec<char> = " azAZ09\"'\\\n\t\r#;,[]=+é\u{7f}\u{1}/:".chars().collect();
    let mut c = DomainConfig::new(format!("g{}", random_string(rng, &name_chars, 20)));
    c.domain_type = *rng.pick(&[DomainType::Pv, DomainType::Pvh]);
    c.memory_kib = (1 + rng.below(1 << 20)) * 1024;
    c.maxmem_kib = c.memory_kib + rng.below(1 << 10) * 1024;
    c.vcpus = 1 + rng.below(512) as u32;
    if rng.below(2) == 0 {
        c.uuid = Some(Uuid::from_u64_pair(rng.next(), rng.next()));
    }
    c.tsc_mode = *rng.pick(&TscMode::ALL);
    for slot in [
        &mut c.kernel,
        &mut c.ramdisk,
        &mut c.extra,
        &mut c.root,
        &mut c.cmdline,
    ] {
        if rng.below(2) == 0 {
            *slot = Some(random_string(rng, &any_chars, 30));
        }
    }
    for i in 0..rng.below(4) {
        let spec = match rng.below(3) {
            0 => format!("/img/{i},raw,xvd{i}"),
            1 => format!(
                "vdev=hd{i}, access=ro, target=/a,{}",
                random_string(rng, &any_chars, 8)
            ),
            _ => format!(",,hdc{i},cdrom"),
        };
        c.disks.push(DiskSpec::parse(&spec).unwrap());
    }
    for i in 0..rng.below(3) {
        c.vifs
            .push(VifSpec::parse(&format!("mac=00:16:3e:00:00:0{i},bridge=br{i}")).unwrap());
    }
    for i in 0..rng.below(2) {
        c.vkbs
            .push(VifSpec::parse(&format!("backend-type=linux,devid={i}")).unwrap());
    }
    for i in 0..rng.below(3) {
        c.consoles.push(
            VifSpec::parse_channel(&format!("name=org.test.{i},connection=pty,devid={}", i + 1))
                .unwrap(),
        );
    }
    c.on_poweroff = *rng.pick(&Action::ALL);
    c.on_reboot = *rng.pick(&Action::ALL);
    c.on_crash = *rng.pick(&Action::ALL);
    c.on_watchdog = *rng.pick(&Action::ALL);
    if rng.below(2) == 0 {
        c.unknown.insert(
            "device_model_args".into(),
            CfgValue::List(vec![
                CfgValue::String(random_string(rng, &any_chars, 10)),
                CfgValue::Number("0x1f".into()),
                CfgValue::List(vec![]),
            ]),
        );
    }
    c
}

#[test]
fn render_parses_back_to_the_same_config() {
    let mut rng = Rng::from_env("render_parses_back_to_the_same_config");
    for _ in 0..500 {
        let c = random_config(&mut rng);
        let text = xlcfg::render(&c);
        let (back, _) = XlConfig::parse("rendered.cfg", text.as_bytes())
            .and_then(|x| x.to_domain_config())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, c, "\n{text}");
        // And the stored form round-trips as well.
        let stored = StoredConfig::new(3, c);
        assert_eq!(StoredConfig::from_json(&stored.to_json()).unwrap(), stored);
    }
}

#[test]
fn mangled_configs_never_panic() {
    let mut rng = Rng::from_env("mangled_configs_never_panic");
    let bytes = FULL.as_bytes();
    let noise = b"[]'\"\\=+;,#\n\r\t x0\xff\xc3\0";
    for _ in 0..3000 {
        let mut b = bytes.to_vec();
        for _ in 0..=rng.below(6) {
            let i = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[i] = *rng.pick(noise),
                1 => b.truncate(i),
                _ => b.insert(i, *rng.pick(noise)),
            }
            if b.is_empty() {
                break;
            }
        }
        if let Ok(cfg) = XlConfig::parse("m.cfg", &b) {
            if let Ok((c, _)) = cfg.to_domain_config() {
                c.validate().unwrap();
            }
        }
    }
}

fn with_guard(test: &str, f: impl FnOnce(&ConfigStore, &crate::lock::UserdataGuard<'_>)) {
    let dir = std::env::temp_dir().join(format!("rxen-stored-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let locks = LockDir::under(&dir);
    let store = ConfigStore::under(&dir);
    let ctx = CtxLock::new(());
    let mut root = Locked::root();
    let mut g = ctx.lock(&mut root);
    let mut t = g.token();
    let guard = locks.lock_userdata(&mut t, 4, &|_| Ok(true)).unwrap();
    f(&store, &guard);
    drop(guard);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stored_config_save_load_update_remove() {
    with_guard("cycle", |store, guard| {
        assert!(store.load_opt(guard).unwrap().is_none());
        let e = store.load(guard).unwrap_err();
        assert!(matches!(e, StoredError::Missing { domid: 4, .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "domain 4: no stored config at {}",
                store.document_path(4).display()
            )
        );
        let (cfg, _) = parse_dom(FULL).unwrap();
        let stored = StoredConfig::new(4, cfg);
        store.save(guard, &stored).unwrap();
        assert_eq!(store.load(guard).unwrap(), stored);
        assert_eq!(store.load(guard).unwrap().schema_version, SCHEMA_VERSION);

        let old = store
            .update(guard, |s| {
                let old = s.config.memory_kib;
                s.config.memory_kib = 256 * 1024;
                Ok::<_, StoredError>(old)
            })
            .unwrap();
        assert_eq!(old, 512 * 1024);
        assert_eq!(store.load(guard).unwrap().config.memory_kib, 256 * 1024);

        // A failing update writes nothing.
        #[derive(Debug)]
        enum E {
            Stored,
            Refused,
        }
        impl From<StoredError> for E {
            fn from(_: StoredError) -> E {
                E::Stored
            }
        }
        let r = store.update(guard, |s| {
            s.config.vcpus = 99;
            Err::<(), _>(E::Refused)
        });
        assert!(matches!(r, Err(E::Refused)));
        assert_eq!(store.load(guard).unwrap().config.vcpus, 2);

        // No temporary files are left behind.
        let names: Vec<String> = std::fs::read_dir(store.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["domain-4.json"]);

        // A document for another domain is refused both ways.
        let other = StoredConfig::new(5, DomainConfig::new("x"));
        assert!(matches!(
            store.save(guard, &other),
            Err(StoredError::WrongDomain {
                domid: 4,
                found: 5,
                ..
            })
        ));
        std::fs::write(store.document_path(4), other.to_json()).unwrap();
        let e = store.load(guard).unwrap_err();
        assert!(
            matches!(
                e,
                StoredError::WrongDomain {
                    domid: 4,
                    found: 5,
                    ..
                }
            ),
            "{e:?}"
        );

        store.remove(guard).unwrap();
        assert!(store.load_opt(guard).unwrap().is_none());
        store.remove(guard).unwrap(); // a second remove is fine
    });
}

#[test]
fn corrupt_stored_config_is_a_clear_error() {
    with_guard("corrupt", |store, guard| {
        let (cfg, _) = parse_dom(FULL).unwrap();
        let good = StoredConfig::new(4, cfg).to_json();
        let path = store.document_path(4);
        std::fs::create_dir_all(store.path()).unwrap();
        // Every truncation of a good document is an error naming the path, never a panic.
        for len in 0..good.len() - 1 {
            std::fs::write(&path, &good[..len]).unwrap();
            let e = store.load(guard).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoredError::Decode {
                        source: DecodeError::Json(_),
                        ..
                    }
                ),
                "{len}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!("domain 4: bad stored config {}", path.display())
            );
        }
        // Another schema version.
        let newer = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"schema_version\": 1", "\"schema_version\": 2");
        std::fs::write(&path, newer).unwrap();
        let e = store.load(guard).unwrap_err();
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "schema version 2 is not supported (this toolstack reads version 1)"
        );
        // Well-formed but invalid.
        let invalid = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"vcpus\": 2", "\"vcpus\": 0");
        std::fs::write(&path, invalid).unwrap();
        assert!(matches!(
            store.load(guard).unwrap_err(),
            StoredError::Decode {
                source: DecodeError::Invalid(ValidationError::NoVcpus),
                ..
            }
        ));
        // A bad disk spec inside is refused too (specs are re-parsed on load).
        let bad_disk = String::from_utf8(good)
            .unwrap()
            .replace("/srv/iso/tools.iso,,hdc,cdrom", "/srv/iso/tools.iso");
        std::fs::write(&path, bad_disk).unwrap();
        assert!(matches!(
            store.load(guard).unwrap_err(),
            StoredError::Decode {
                source: DecodeError::Json(_),
                ..
            }
        ));
        // Unreadable: a directory where the document should be.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            store.load(guard).unwrap_err(),
            StoredError::Read { .. }
        ));
        std::fs::remove_dir(&path).unwrap();
    });
}

#[test]
fn tsc_mode_and_the_command_line_are_read_as_xl_reads_them() {
    let parse = |text: &str| {
        XlConfig::parse("t.cfg", format!("name = \"g\"\n{text}").as_bytes())
            .and_then(|x| x.to_domain_config())
    };
    let (c, w) = parse("tsc_mode = \"native\"\n").unwrap();
    assert_eq!(c.tsc_mode, TscMode::Native);
    assert!(w.is_empty());
    assert_eq!(
        parse("tsc_mode = 1\n").unwrap().0.tsc_mode,
        TscMode::AlwaysEmulate
    );
    let e = parse("tsc_mode = \"native_paravirt\"\n").unwrap_err();
    assert!(e.to_string().contains("native_paravirt was removed"), "{e}");
    assert!(parse("tsc_mode = 3\n").is_err());
    assert_eq!(parse("").unwrap().0.tsc_mode, TscMode::Default);

    let cmd = |text: &str| parse(text).unwrap().0.kernel_cmdline();
    assert_eq!(cmd(""), None);
    assert_eq!(cmd("extra = \"quiet\"\n").as_deref(), Some("quiet"));
    assert_eq!(
        cmd("root = \"/dev/xvda1\"\n").as_deref(),
        Some("root=/dev/xvda1")
    );
    assert_eq!(
        cmd("root = \"/dev/xvda1\"\nextra = \"quiet\"\n").as_deref(),
        Some("root=/dev/xvda1 quiet")
    );
    let (c, w) = parse("root = \"/dev/xvda1\"\ncmdline = \"console=hvc0\"\n").unwrap();
    assert_eq!(c.kernel_cmdline().as_deref(), Some("console=hvc0"));
    assert_eq!(w.len(), 1, "root is ignored, with a warning: {w:?}");
}
