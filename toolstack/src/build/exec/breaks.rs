//! Breaking one build step on purpose, so a test can show that its checks catch it.
//!
//! Each [`Break`] spoils exactly one thing the executor writes or sets, in a way that no
//! hypercall refuses (a wrong value, a skipped write), which is what a structural boot check
//! must notice. They exist for tests only: without the `test-hooks` cargo feature
//! [`Breaks::has`] is a `const fn` answering `false`, the compiler drops every branch on it,
//! and nothing reads `RXEN_TEST_BREAK`; a shipped `rxl` cannot be told to build a broken guest.
//!
//! With the feature, `RXEN_TEST_BREAK=rip,grant-store` (names as [`Break::name`]) breaks those
//! steps in every creation of the process; a library caller can pass [`Breaks`] in
//! [`crate::create::CreateOptions`] instead.

/// One build step broken on purpose (see each variant for what it spoils).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Break {
    /// The boot vCPU's instruction pointer is off by a page (PV `rip`, PVH CPU record `rip`).
    Rip,
    /// PV: the boot stack pointer points a page below the boot stack.
    Stack,
    /// The pointer to the start info is off by a page (PV `rsi`, PVH `rbx`).
    StartInfoPtr,
    /// PV: the L1 entry that maps the entry point is cleared.
    PageTable,
    /// PV: the p2m list's entry for the kernel's first frame names another frame.
    P2m,
    /// The start info's magic is spoilt (PV `start_info.magic`, PVH `hvm_start_info.magic`).
    StartInfo,
    /// The first byte of the kernel's first loaded segment is flipped.
    Kernel,
    /// The command line handed to the guest loses its last byte.
    Cmdline,
    /// PV: `evtchn_upcall_mask` is left clear in shared_info.
    UpcallMask,
    /// PV: the L4 is not pinned.
    Pin,
    /// PVH: the MTRR records are left as Xen made them (no write-back default type).
    Mtrr,
    /// PVH: `HVM_PARAM_STORE_PFN` names the console page.
    HvmStorePfn,
    /// PVH: `HVM_PARAM_CONSOLE_EVTCHN` names the store's event channel.
    HvmConsoleEvtchn,
    /// Grant entry 0 (the console ring) is not seeded.
    GrantConsole,
    /// Grant entry 1 (the xenstore ring) grants the console page instead.
    GrantStore,
    /// xenstore's `store/ring-ref` names the console page.
    StoreRingRef,
    /// xenstore's `console/ring-ref` is off by one frame.
    ConsoleRingRef,
    /// The xenstore ring's event channel handed to the guest is not the one allocated.
    StoreEvtchn,
    /// PVH: the CPUID policy is left as Xen made it (no libxl topology).
    CpuidTopology,
}

impl Break {
    /// Every break.
    pub const ALL: [Break; 19] = [
        Break::Rip,
        Break::Stack,
        Break::StartInfoPtr,
        Break::PageTable,
        Break::P2m,
        Break::StartInfo,
        Break::Kernel,
        Break::Cmdline,
        Break::UpcallMask,
        Break::Pin,
        Break::Mtrr,
        Break::HvmStorePfn,
        Break::HvmConsoleEvtchn,
        Break::GrantConsole,
        Break::GrantStore,
        Break::StoreRingRef,
        Break::ConsoleRingRef,
        Break::StoreEvtchn,
        Break::CpuidTopology,
    ];

    /// Its name in `RXEN_TEST_BREAK`.
    pub fn name(self) -> &'static str {
        match self {
            Break::Rip => "rip",
            Break::Stack => "stack",
            Break::StartInfoPtr => "start-info-ptr",
            Break::PageTable => "page-table",
            Break::P2m => "p2m",
            Break::StartInfo => "start-info",
            Break::Kernel => "kernel",
            Break::Cmdline => "cmdline",
            Break::UpcallMask => "upcall-mask",
            Break::Pin => "pin",
            Break::Mtrr => "mtrr",
            Break::HvmStorePfn => "hvm-store-pfn",
            Break::HvmConsoleEvtchn => "hvm-console-evtchn",
            Break::GrantConsole => "grant-console",
            Break::GrantStore => "grant-store",
            Break::StoreRingRef => "store-ring-ref",
            Break::ConsoleRingRef => "console-ring-ref",
            Break::StoreEvtchn => "store-evtchn",
            Break::CpuidTopology => "cpuid-topology",
        }
    }

    /// The break named `name`.
    pub fn from_name(name: &str) -> Option<Break> {
        Break::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether it applies to a PV guest, a PVH guest, or both.
    pub fn applies_to(self, pvh: bool) -> bool {
        match self {
            Break::Stack | Break::PageTable | Break::P2m | Break::UpcallMask | Break::Pin => !pvh,
            Break::Mtrr | Break::HvmStorePfn | Break::HvmConsoleEvtchn | Break::CpuidTopology => {
                pvh
            }
            _ => true,
        }
    }

    #[cfg(feature = "test-hooks")]
    fn bit(self) -> u32 {
        let i = Break::ALL.iter().position(|b| *b == self).unwrap_or(0);
        1 << i
    }
}

/// A name in `RXEN_TEST_BREAK` that names no [`Break`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown build break {name:?} (known: {known})")]
pub struct UnknownBreak {
    /// The name.
    pub name: String,
    /// The known names, comma separated.
    pub known: String,
}

/// A set of [`Break`]s: empty, always, without the `test-hooks` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaks {
    #[cfg(feature = "test-hooks")]
    set: u32,
}

/// The environment variable naming the steps to break (test builds only).
pub const BREAK_ENV: &str = "RXEN_TEST_BREAK";

impl Breaks {
    /// No break.
    pub const NONE: Breaks = Breaks {
        #[cfg(feature = "test-hooks")]
        set: 0,
    };

    /// Whether `b` is to be broken: never without the `test-hooks` feature.
    #[cfg(not(feature = "test-hooks"))]
    #[inline(always)]
    pub const fn has(&self, _b: Break) -> bool {
        false
    }

    /// Whether `b` is to be broken.
    #[cfg(feature = "test-hooks")]
    pub fn has(&self, b: Break) -> bool {
        self.set & b.bit() != 0
    }

    /// Whether any break is set.
    pub fn any(&self) -> bool {
        Break::ALL.iter().any(|b| self.has(*b))
    }

    /// These breaks and `b`.
    #[cfg(feature = "test-hooks")]
    #[must_use]
    pub fn with(self, b: Break) -> Breaks {
        Breaks {
            set: self.set | b.bit(),
        }
    }

    /// Both sets.
    #[must_use]
    pub fn union(self, other: Breaks) -> Breaks {
        #[cfg(feature = "test-hooks")]
        {
            Breaks {
                set: self.set | other.set,
            }
        }
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = other;
            self
        }
    }

    /// Parses a comma-separated list of [`Break::name`]s.
    ///
    /// # Errors
    ///
    /// [`UnknownBreak`] for a name that is not one.
    #[cfg(feature = "test-hooks")]
    pub fn parse(list: &str) -> Result<Breaks, UnknownBreak> {
        let mut out = Breaks::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let b = Break::from_name(name).ok_or_else(|| UnknownBreak {
                name: name.to_owned(),
                known: Break::ALL.map(Break::name).join(","),
            })?;
            out = out.with(b);
        }
        Ok(out)
    }

    /// The breaks `RXEN_TEST_BREAK` names: none without the `test-hooks` feature, which then
    /// reads no environment.
    ///
    /// # Errors
    ///
    /// [`UnknownBreak`] for a name that is not one.
    pub fn from_env() -> Result<Breaks, UnknownBreak> {
        #[cfg(feature = "test-hooks")]
        {
            match std::env::var(BREAK_ENV) {
                Ok(list) => Breaks::parse(&list),
                Err(_) => Ok(Breaks::NONE),
            }
        }
        #[cfg(not(feature = "test-hooks"))]
        {
            Ok(Breaks::NONE)
        }
    }
}

#[cfg(all(test, feature = "test-hooks"))]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parse() {
        for b in Break::ALL {
            assert_eq!(Break::from_name(b.name()), Some(b));
        }
        let s = Breaks::parse("rip, grant-store").unwrap();
        assert!(s.has(Break::Rip) && s.has(Break::GrantStore) && !s.has(Break::P2m));
        assert!(Breaks::parse("rip,bogus")
            .unwrap_err()
            .known
            .contains("p2m"));
        assert!(!Breaks::NONE.any());
    }
}
