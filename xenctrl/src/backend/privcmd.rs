//! /dev/xen/privcmd.
