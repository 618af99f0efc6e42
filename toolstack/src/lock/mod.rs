//! The toolstack's lock hierarchy, checked by the compiler.
//!
//! Three locks, outermost first (the workspace's DESIGN.md; `toolstack/DESIGN.md` tells why):
//!
//! ```text
//! slow device lock (per domain, a file lock, across processes; held across slow waits)
//!   -> ctx lock (per process, a mutex)
//!        -> userdata lock (per domain, a file lock, across processes; "the fast lock")
//! ```
//!
//! The hierarchy is a chain, and the userdata lock additionally needs the ctx lock (libxl:
//! "taking the userdata lock requires the CTX_LOCK to be held"). So there are exactly two legal
//! paths: `ctx -> userdata` for ordinary operations, and `slow -> ctx -> userdata` for device work
//! that waits.
//!
//! # How the compiler checks it
//!
//! Lock levels are uninhabited types in [`level`]. A [`Locked<'a, L>`](Locked) token proves that
//! the innermost lock the caller holds is `L` (or none, for [`level::Unlocked`]). Taking a lock
//! needs `&mut` a token whose level comes before the lock's level ([`LockBefore`]), and gives back
//! a guard from which a token of the new level can be borrowed. Because the new token borrows the
//! old one mutably, the old one cannot be used again until the new lock is released: you cannot
//! take a second lock at the same level, nor one further out. The edges are declared once, in this
//! file, and the level traits are sealed so no other module can add one.
//!
//! The thread's first token comes from [`Locked::root`], which refuses (panics) to make a second
//! root while one is alive on the same thread, so a fresh root cannot be used to sidestep the
//! order. Tokens and guards are not `Send`.
//!
//! ```
//! use toolstack::lock::{CtxLock, DomainCheck, LockDir, Locked};
//!
//! let dir = std::env::temp_dir().join(format!("rxen-lock-doc-{}", std::process::id()));
//! let locks = LockDir::new(&dir);
//! let ctx = CtxLock::new(Vec::<String>::new());
//! let exists = |_domid| Ok(true); // the caller asks Xen; here every domain exists
//!
//! let mut root = Locked::root();
//! // Device work: slow -> ctx -> userdata.
//! let mut slow = locks.lock_slow(&mut root, 7, &exists)?;
//! let mut slow_token = slow.token();
//! let mut ctx_guard = ctx.lock(&mut slow_token);
//! let (log, mut ctx_token) = ctx_guard.split();
//! let userdata = locks.lock_userdata(&mut ctx_token, 7, &exists)?;
//! log.push(format!("holding the userdata lock of domain {}", userdata.domid()));
//! drop(userdata);
//! drop(ctx_guard);
//! drop(slow);
//!
//! // Ordinary operation: ctx -> userdata, no slow lock.
//! let mut ctx_guard = ctx.lock(&mut root);
//! let (_, mut ctx_token) = ctx_guard.split();
//! let userdata = locks.lock_userdata(&mut ctx_token, 7, &exists)?;
//! userdata.release()?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), toolstack::lock::Error>(())
//! ```
//!
//! # Wrong orders do not build
//!
//! Taking the ctx lock while holding the userdata lock:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{CtxLock, LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut g = ctx.lock(&mut root);
//! let (_, mut t) = g.split();
//! let mut ud = locks.lock_userdata(&mut t, 1, &exists).unwrap();
//! let other = CtxLock::new(());
//! let mut ud_token = ud.token();
//! let _ = other.lock(&mut ud_token); // nothing comes after the userdata level
//! ```
//!
//! Taking a ctx lock while holding a ctx lock (a second `CtxLock`, so the borrow checker has
//! nothing to say; the level check refuses it):
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{CtxLock, Locked};
//! let a = CtxLock::new(());
//! let b = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut ga = a.lock(&mut root);
//! let (_, mut t) = ga.split();
//! let _gb = b.lock(&mut t); // ctx while holding ctx
//! ```
//!
//! Taking the slow lock while holding the ctx lock:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{CtxLock, LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut g = ctx.lock(&mut root);
//! let (_, mut t) = g.split();
//! let _slow = locks.lock_slow(&mut t, 1, &exists); // slow while holding ctx
//! ```
//!
//! Taking the slow lock while holding the ctx lock, through the root token the ctx guard borrows:
//!
//! ```compile_fail,E0499
//! # use toolstack::lock::{CtxLock, LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let g = ctx.lock(&mut root);
//! let _slow = locks.lock_slow(&mut root, 1, &exists); // the root is still lent to `g`
//! drop(g);
//! ```
//!
//! Taking the slow lock while holding the userdata lock:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{CtxLock, LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut g = ctx.lock(&mut root);
//! let (_, mut t) = g.split();
//! let mut ud = locks.lock_userdata(&mut t, 1, &exists).unwrap();
//! let mut ud_token = ud.token();
//! let _slow = locks.lock_slow(&mut ud_token, 1, &exists); // slow is outermost
//! ```
//!
//! Taking the userdata lock twice (the ctx token is lent to the first guard):
//!
//! ```compile_fail,E0499
//! # use toolstack::lock::{CtxLock, LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let ctx = CtxLock::new(());
//! let mut root = Locked::root();
//! let mut g = ctx.lock(&mut root);
//! let (_, mut t) = g.split();
//! let first = locks.lock_userdata(&mut t, 1, &exists).unwrap();
//! let second = locks.lock_userdata(&mut t, 2, &exists).unwrap();
//! drop(first);
//! drop(second);
//! ```
//!
//! Taking the userdata lock without the ctx lock:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let mut root = Locked::root();
//! let _ud = locks.lock_userdata(&mut root, 1, &exists); // needs the ctx lock first
//! ```
//!
//! Taking the userdata lock under the slow lock but without the ctx lock:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let mut root = Locked::root();
//! let mut slow = locks.lock_slow(&mut root, 1, &exists).unwrap();
//! let _ud = locks.lock_userdata(&mut slow.token(), 1, &exists); // slow -> userdata skips ctx
//! ```
//!
//! Taking the slow lock twice:
//!
//! ```compile_fail,E0277
//! # use toolstack::lock::{LockDir, Locked};
//! # let locks = LockDir::new("/nonexistent");
//! # let exists = |_| Ok(true);
//! let mut root = Locked::root();
//! let mut slow = locks.lock_slow(&mut root, 1, &exists).unwrap();
//! let _again = locks.lock_slow(&mut slow.token(), 2, &exists);
//! ```
//!
//! Tokens cannot be made out of thin air at a deeper level: only [`Locked::root`] makes one, at
//! [`level::Unlocked`]:
//!
//! ```compile_fail,E0599
//! use toolstack::lock::{level, Locked};
//! let _t = Locked::<level::Ctx>::root();
//! ```

mod domain;
pub mod file;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

pub use domain::{
    libxl_userdata_name, CheckError, DomainCheck, Error, LockDir, SlowGuard, UserdataGuard,
    UuidLookup,
};

/// A domain id, as Xen numbers domains (the same type as `xenctrl::DomId`).
pub use crate::paths::DomId;

mod sealed {
    pub trait Sealed {}
}

/// The lock levels: uninhabited types, one per lock, plus [`Unlocked`](level::Unlocked).
pub mod level {
    /// No lock held: the level of the thread's root token.
    #[derive(Debug)]
    pub enum Unlocked {}
    /// The per-domain slow device lock is the innermost lock held.
    #[derive(Debug)]
    pub enum Slow {}
    /// The per-process ctx lock is the innermost lock held.
    #[derive(Debug)]
    pub enum Ctx {}
    /// The per-domain userdata ("fast") lock is held. Nothing may be taken after it.
    #[derive(Debug)]
    pub enum Userdata {}

    impl super::sealed::Sealed for Unlocked {}
    impl super::sealed::Sealed for Slow {}
    impl super::sealed::Sealed for Ctx {}
    impl super::sealed::Sealed for Userdata {}
}

/// A lock level. Sealed: the levels are the four types in [`level`].
pub trait LockLevel: sealed::Sealed {
    /// The level's name, for messages.
    const NAME: &'static str;
}

impl LockLevel for level::Unlocked {
    const NAME: &'static str = "no lock";
}
impl LockLevel for level::Slow {
    const NAME: &'static str = "the slow device lock";
}
impl LockLevel for level::Ctx {
    const NAME: &'static str = "the ctx lock";
}
impl LockLevel for level::Userdata {
    const NAME: &'static str = "the userdata lock";
}

/// `Self` may be taken while the innermost lock held is `A`. Sealed; the edges are declared once,
/// below, with `lock_edges!`.
pub trait LockAfter<A: LockLevel>: LockLevel + sealed::Sealed {}

/// The mirror of [`LockAfter`]: while the innermost lock held is `Self`, `B` may be taken.
/// Implemented for every declared edge; bound on this in signatures.
pub trait LockBefore<B: LockLevel>: LockLevel {}

impl<A: LockLevel, B: LockAfter<A>> LockBefore<B> for A {}

/// Declares the edges of the hierarchy, each once: `A => B` means "B may be taken while the
/// innermost lock held is A". The list is the whole hierarchy: nothing else implements
/// [`LockAfter`].
macro_rules! lock_edges {
    ($($before:ty => $after:ty),* $(,)?) => {
        $(impl LockAfter<$before> for $after {})*
    };
}

lock_edges! {
    level::Unlocked => level::Slow,
    level::Unlocked => level::Ctx,
    level::Slow => level::Ctx,
    level::Ctx => level::Userdata,
}

thread_local! {
    static ROOT_ALIVE: Cell<bool> = const { Cell::new(false) };
}

/// A token proving that the innermost lock the holder has taken is `L`.
///
/// Taking a lock needs `&mut Locked<'_, L>` with `L: LockBefore<Lock>`. The root token (no lock
/// held) comes from [`Locked::root`]; the others are borrowed from a guard, and live no longer
/// than it. Not `Send`: a token speaks for its thread's locks.
#[derive(Debug)]
pub struct Locked<'a, L: LockLevel> {
    /// `Some` for the thread's root token; unregisters it on drop. Kept in a field, not a `Drop`
    /// impl on `Locked`, so that tokens borrowed from guards end their borrows at their last use.
    _root: Option<RootRegistration>,
    _level: PhantomData<L>,
    _borrow: PhantomData<&'a mut ()>,
    _not_send: PhantomData<*const ()>,
}

impl Locked<'static, level::Unlocked> {
    /// The thread's root token: no lock held.
    ///
    /// Make one at the top of an operation and lend it down as `&mut`.
    ///
    /// # Panics
    ///
    /// If this thread already has a live root token: a second root would let a callee take locks
    /// out of order behind its caller's back.
    pub fn root() -> Self {
        match Self::try_root() {
            Some(t) => t,
            None => panic!(
                "a lock-order root token already exists on this thread; \
                 lend the existing one down instead of making another"
            ),
        }
    }

    /// Like [`root`](Self::root), but `None` instead of panicking when this thread already has a
    /// live root token.
    pub fn try_root() -> Option<Self> {
        ROOT_ALIVE.with(|alive| {
            if alive.replace(true) {
                None
            } else {
                Some(Locked::make(Some(RootRegistration)))
            }
        })
    }
}

impl<L: LockLevel> Locked<'_, L> {
    fn make(root: Option<RootRegistration>) -> Self {
        Locked {
            _root: root,
            _level: PhantomData,
            _borrow: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// The name of the innermost lock this token speaks for.
    pub fn level_name(&self) -> &'static str {
        L::NAME
    }
}

/// The thread's root token is alive while this is.
#[derive(Debug)]
struct RootRegistration;

impl Drop for RootRegistration {
    fn drop(&mut self) {
        ROOT_ALIVE.with(|alive| alive.set(false));
    }
}

/// Makes the token a guard lends out. Only this module and its children call it.
fn token<'a, L: LockLevel>() -> Locked<'a, L> {
    Locked::make(None)
}

/// The per-process ctx lock, a mutex around the toolstack's context `T` (its Xen and xenstore
/// handles, say).
///
/// Taken with a token before [`level::Ctx`] (no lock, or the slow lock); the guard derefs to `T`
/// and [`CtxGuard::split`] lends a [`level::Ctx`] token for the userdata lock.
#[derive(Debug, Default)]
pub struct CtxLock<T> {
    inner: Mutex<T>,
}

impl<T> CtxLock<T> {
    /// A ctx lock around `value`.
    pub fn new(value: T) -> Self {
        CtxLock {
            inner: Mutex::new(value),
        }
    }

    /// Takes the ctx lock, blocking until it is free.
    ///
    /// A thread that panicked while holding the lock does not poison it for the others: the
    /// context is handed over as it was left (the lock protects the order of operations, and the
    /// durable state it guards lives in Xen, xenstore and the stored config, each of which is
    /// consistent on its own).
    pub fn lock<'t, L: LockBefore<level::Ctx>>(
        &'t self,
        _token: &'t mut Locked<'_, L>,
    ) -> CtxGuard<'t, T> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        CtxGuard {
            guard,
            _token: PhantomData,
        }
    }

    /// The context, without locking: `&mut self` proves nobody else holds it.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// The context, consuming the lock.
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// The ctx lock, held. Derefs to the context; [`split`](Self::split) also lends a
/// [`level::Ctx`] token.
#[derive(Debug)]
pub struct CtxGuard<'t, T> {
    guard: MutexGuard<'t, T>,
    _token: PhantomData<&'t mut ()>,
}

impl<T> CtxGuard<'_, T> {
    /// The context and a token for the locks after the ctx lock (the userdata lock), both at
    /// once, so the context stays usable while the userdata lock is held.
    pub fn split(&mut self) -> (&mut T, Locked<'_, level::Ctx>) {
        (&mut *self.guard, token())
    }

    /// A token for the locks after the ctx lock, without the context.
    pub fn token(&mut self) -> Locked<'_, level::Ctx> {
        token()
    }
}

impl<T> Deref for CtxGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for CtxGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}
