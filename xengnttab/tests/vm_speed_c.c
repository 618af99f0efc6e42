/*
 * The C side of tests/vm_speed.rs: times the operations of Xen's C libraries that the Rust
 * crates replace, in the dom0 of scripts/xen-vm-test (which builds this file with gcc against
 * libxen-dev and ships it as /rxen/bin/vm_speed_c).
 *
 *   vm_speed_c gnttab PAGES ITERS        map+unmap PAGES grants that dom0 shares with itself
 *                                         (xengntshr_share_pages, then per iteration
 *                                         xengnttab_map_domain_grant_refs + xengnttab_unmap)
 *   vm_speed_c evtchn ITERS               round trips between two bound dom0 ports on one handle:
 *                                         notify, pending, unmask, and back
 *   vm_speed_c foreign DOMID ITERS FILE   xenforeignmemory_map + _unmap of the frames listed in
 *                                         FILE (decimal, whitespace-separated), read-write
 *
 * Setup (opening handles, sharing, binding) is not timed. ITERS/8 + 1 untimed iterations run
 * first. The result is one line on stdout:
 *   vm_speed_c PATH count=N iters=I ns_per_op=X
 * where X is the CLOCK_MONOTONIC time of the timed loop divided by ITERS.
 * Errors go to stderr with exit status 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xengnttab.h>

static void die(const char *what)
{
    fprintf(stderr, "vm_speed_c: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long arg_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0') {
        fprintf(stderr, "vm_speed_c: bad %s: %s\n", what, s);
        exit(1);
    }
    return v;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts))
        die("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void report(const char *path, unsigned long count, unsigned long iters, uint64_t ns)
{
    printf("vm_speed_c %s count=%lu iters=%lu ns_per_op=%" PRIu64 "\n", path, count, iters,
           ns / iters);
}

static void map_unmap_grants(xengnttab_handle *xgt, uint32_t count, uint32_t *refs)
{
    void *p = xengnttab_map_domain_grant_refs(xgt, count, 0, refs, PROT_READ | PROT_WRITE);
    if (!p)
        die("xengnttab_map_domain_grant_refs");
    if (xengnttab_unmap(xgt, p, count))
        die("xengnttab_unmap");
}

static void gnttab(unsigned long count, unsigned long iters)
{
    xengntshr_handle *xgs = xengntshr_open(NULL, 0);
    xengnttab_handle *xgt = xengnttab_open(NULL, 0);
    if (!xgs)
        die("xengntshr_open");
    if (!xgt)
        die("xengnttab_open");
    uint32_t *refs = calloc(count, sizeof(*refs));
    if (!refs)
        die("calloc");
    void *shared = xengntshr_share_pages(xgs, 0, (int)count, refs, 1);
    if (!shared)
        die("xengntshr_share_pages");
    for (unsigned long i = 0; i < iters / 8 + 1; i++)
        map_unmap_grants(xgt, (uint32_t)count, refs);
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < iters; i++)
        map_unmap_grants(xgt, (uint32_t)count, refs);
    uint64_t t1 = now_ns();
    report("gnttab", count, iters, t1 - t0);
    if (xengntshr_unshare(xgs, shared, count))
        die("xengntshr_unshare");
    free(refs);
    xengnttab_close(xgt);
    xengntshr_close(xgs);
}

static void wait_for(xenevtchn_handle *xce, evtchn_port_t want)
{
    xenevtchn_port_or_error_t got = xenevtchn_pending(xce);
    if (got < 0)
        die("xenevtchn_pending");
    if ((evtchn_port_t)got != want) {
        fprintf(stderr, "vm_speed_c: event on port %d, expected %u\n", got, want);
        exit(1);
    }
    if (xenevtchn_unmask(xce, want))
        die("xenevtchn_unmask");
}

static void round_trip(xenevtchn_handle *xce, evtchn_port_t a, evtchn_port_t b)
{
    if (xenevtchn_notify(xce, b))
        die("xenevtchn_notify");
    wait_for(xce, a);
    if (xenevtchn_notify(xce, a))
        die("xenevtchn_notify");
    wait_for(xce, b);
}

/* A dom0 port bound unbound (*a) and a second port bound interdomain to it (*b), after the
 * event Xen sets pending on a freshly bound interdomain port (notifications sent to the
 * unbound port before could have been lost) is taken. */
static void bind_pair(xenevtchn_handle *xce, evtchn_port_t *a, evtchn_port_t *b)
{
    xenevtchn_port_or_error_t unbound = xenevtchn_bind_unbound_port(xce, 0);
    if (unbound < 0)
        die("xenevtchn_bind_unbound_port");
    xenevtchn_port_or_error_t peer = xenevtchn_bind_interdomain(xce, 0, (evtchn_port_t)unbound);
    if (peer < 0)
        die("xenevtchn_bind_interdomain");
    *a = (evtchn_port_t)unbound;
    *b = (evtchn_port_t)peer;
    wait_for(xce, *b);
}

static void unbind_pair(xenevtchn_handle *xce, evtchn_port_t a, evtchn_port_t b)
{
    if (xenevtchn_unbind(xce, b) || xenevtchn_unbind(xce, a))
        die("xenevtchn_unbind");
}

static void evtchn(unsigned long iters)
{
    xenevtchn_handle *xce = xenevtchn_open(NULL, 0);
    if (!xce)
        die("xenevtchn_open");
    evtchn_port_t a, b;
    bind_pair(xce, &a, &b);
    for (unsigned long i = 0; i < iters / 8 + 1; i++)
        round_trip(xce, a, b);
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < iters; i++)
        round_trip(xce, a, b);
    uint64_t t1 = now_ns();
    report("evtchn", 1, iters, t1 - t0);
    unbind_pair(xce, a, b);
    xenevtchn_close(xce);
}

static void map_unmap_foreign(xenforeignmemory_handle *fmem, uint32_t domid, size_t count,
                              const xen_pfn_t *frames, int *err)
{
    void *p = xenforeignmemory_map(fmem, domid, PROT_READ | PROT_WRITE, count, frames, err);
    if (!p)
        die("xenforeignmemory_map");
    for (size_t i = 0; i < count; i++) {
        if (err[i]) {
            fprintf(stderr, "vm_speed_c: frame %zu (%lu): error %d\n", i,
                    (unsigned long)frames[i], err[i]);
            exit(1);
        }
    }
    if (xenforeignmemory_unmap(fmem, p, count))
        die("xenforeignmemory_unmap");
}

static void foreign(unsigned long domid, unsigned long iters, const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die(file);
    size_t count = 0, cap = 1024;
    xen_pfn_t *frames = malloc(cap * sizeof(*frames));
    unsigned long v;
    if (!frames)
        die("malloc");
    while (fscanf(f, "%lu", &v) == 1) {
        if (count == cap) {
            cap *= 2;
            frames = realloc(frames, cap * sizeof(*frames));
            if (!frames)
                die("realloc");
        }
        frames[count++] = v;
    }
    fclose(f);
    if (count == 0) {
        fprintf(stderr, "vm_speed_c: no frames in %s\n", file);
        exit(1);
    }
    int *err = calloc(count, sizeof(*err));
    xenforeignmemory_handle *fmem = xenforeignmemory_open(NULL, 0);
    if (!err)
        die("calloc");
    if (!fmem)
        die("xenforeignmemory_open");
    for (unsigned long i = 0; i < iters / 8 + 1; i++)
        map_unmap_foreign(fmem, (uint32_t)domid, count, frames, err);
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < iters; i++)
        map_unmap_foreign(fmem, (uint32_t)domid, count, frames, err);
    uint64_t t1 = now_ns();
    report("foreign", count, iters, t1 - t0);
    xenforeignmemory_close(fmem);
    free(err);
    free(frames);
}

int main(int argc, char **argv)
{
    /* Line-buffered even into a pipe, so the report is out before exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "gnttab")) {
        gnttab(arg_num(argv[2], "page count"), arg_num(argv[3], "iterations"));
    } else if (argc == 3 && !strcmp(argv[1], "evtchn")) {
        evtchn(arg_num(argv[2], "iterations"));
    } else if (argc == 5 && !strcmp(argv[1], "foreign")) {
        foreign(arg_num(argv[2], "domid"), arg_num(argv[3], "iterations"), argv[4]);
    } else {
        fprintf(stderr, "usage: vm_speed_c gnttab PAGES ITERS | evtchn ITERS | "
                        "foreign DOMID ITERS FRAMES-FILE\n");
        return 1;
    }
    return 0;
}
