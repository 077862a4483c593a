/*
 * main.c - vdiskd: options, logging, startup and shutdown.
 *
 * vdiskd serves the volumes, snapshots and templates of one store over
 * NBD.  Startup opens the store, one vd_ctx (libaio queue + eventfd), one
 * vd_layer_cache (template layers shared by linked clones) and the
 * listening sockets, then runs the event loop (loop.c).  SIGTERM/SIGINT:
 * stop accepting, finish the requests in flight, close the connections,
 * close every chain (flush, clear the dirty flag), close the store, exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdiskd.h"

int vdiskd_verbose;
static bool use_syslog;

void vlog(int prio, const char *fmt, ...)
{
    va_list ap;
    if (prio == LOG_DEBUG && !vdiskd_verbose)
        return;
    va_start(ap, fmt);
    if (use_syslog) {
        vsyslog(prio, fmt, ap);
    } else {
        char line[1024];
        vsnprintf(line, sizeof(line), fmt, ap);
        fprintf(stderr, "vdiskd[%d]: %s%s\n", (int)getpid(),
                prio <= LOG_ERR ? "error: " : "", line);
    }
    va_end(ap);
}

static void usage(FILE *f)
{
    fputs("Usage: vdiskd [OPTIONS]\n"
          "Serves the volumes of a vdisk store over NBD.\n"
          "\n"
          "  --store DIR           the store (default $VDISK_STORE, else /var/lib/vdisk\n"
          "                        for root, else $XDG_DATA_HOME/vdisk)\n"
          "  --listen unix:PATH    listen on a unix socket (default: STORE/nbd.sock)\n"
          "  --listen tcp:HOST[:PORT]  listen on TCP (default port " VDISKD_DEFAULT_PORT ")\n"
          "                        --listen may be repeated\n"
          "  --control PATH        the control socket (default: STORE/control.sock;\n"
          "                        'none': no control API)\n"
          "  --control-group GROUP let GROUP use the control socket too (mode 0660)\n"
          "  --control-ro PATH     a read-only control socket too: queries only, for\n"
          "                        monitoring (mode 0666)\n"
          "  --control-ro-group GROUP  only GROUP may use it (mode 0660)\n"
          "  --tls off|on|require  TLS (NBD_OPT_STARTTLS): off; offered; or required\n"
          "                        before anything else (default: require when\n"
          "                        credentials are given, else off)\n"
          "  --tls-certs DIR       x509: DIR/server-cert.pem, DIR/server-key.pem, and\n"
          "                        DIR/ca-cert.pem to verify client certificates\n"
          "  --tls-psk FILE        pre-shared keys, lines IDENTITY:HEXKEY\n"
          "  --tls-verify-peer     refuse clients without a certificate the CA signed\n"
          "                        (SIGHUP reloads the certificates and keys)\n"
          "  --read-only           serve volumes read-only too\n"
          "  --cache none|writeback  none: O_DIRECT (default); writeback: page cache\n"
          "  --poll-us N           while I/O is in flight, poll this many microseconds\n"
          "                        before sleeping (default " VDISKD_STR(VDISKD_POLL_US) "; 0: never poll)\n"
          "  --block-cache SIZE    memory for blocks read from frozen layers (templates,\n"
          "                        snapshots), shared by every export (default 256M;\n"
          "                        0: none); suffixes K, M, G\n"
          "  --space-warn P[,P...] warn (log, SPACE_LOW event) when the store's\n"
          "                        filesystem has less than P% free (default 10,5,1)\n"
          "  --threads N           event loop threads (default: one per CPU, at most "
          VDISKD_STR(VDISKD_MAX_THREADS) ")\n"
          "  --max-connections N   connections in all (default "
          VDISKD_STR(VDISKD_MAX_CONNS) "; 0: no limit);\n"
          "                        more are closed at once, with a log line\n"
          "  --max-connections-per-client N  from one IP address or unix uid (default "
          VDISKD_STR(VDISKD_MAX_CONNS_CLIENT) ")\n"
          "  --handshake-timeout SECONDS  to choose an export, TLS included (default "
          VDISKD_STR(VDISKD_HANDSHAKE_TIMEOUT) ";\n"
          "                        0: none)\n"
          "  --max-inflight N      requests in flight per connection; a client that\n"
          "                        sends more waits (default "
          VDISKD_STR(VDISKD_MAX_INFLIGHT) ")\n"
          "  --max-payload-memory SIZE  memory for READ/WRITE payloads, whole daemon;\n"
          "                        requests wait for it (default 1G; 0: no limit)\n"
          "  --user USER[:GROUP]   run as USER once the sockets are bound (root only)\n"
          "  --syslog              log to syslog instead of stderr\n"
          "  --stdio               serve one connection on stdin/stdout and exit\n"
          "                        (for tests, fuzzing and inetd-style use)\n"
          "  -f, --foreground      do not detach (logs go to stderr)\n"
          "  -v, --verbose         debug logging (twice: the protocol library's too)\n"
          "  -h, --help            this help\n"
          "  -V, --version         the version\n"
          "\n"
          "Exports: VOL (read-write), VOL@SNAP, TPL and TPL@N (read-only).\n"
          "Who may open them: the store's access rules (vdisk export allow|deny|rules).\n"
          "Exit status: 0 after SIGTERM/SIGINT, 1 on an error at startup, 2 usage.\n", f);
}

enum { OPT_CONTROL_RO = 500, OPT_CONTROL_RO_GROUP };
enum { OPT_TLS = 400, OPT_TLS_CERTS, OPT_TLS_PSK, OPT_TLS_VERIFY_PEER };
enum { OPT_MAX_CONNS = 600, OPT_MAX_CONNS_CLIENT, OPT_HANDSHAKE_TIMEOUT, OPT_MAX_INFLIGHT,
       OPT_MAX_PAYLOAD_MEMORY, OPT_USER };
enum { OPT_STORE = 256, OPT_LISTEN, OPT_READ_ONLY, OPT_CACHE, OPT_SYSLOG, OPT_STDIO, OPT_POLL_US, OPT_THREADS, OPT_CONTROL, OPT_CONTROL_GROUP, OPT_SPACE_WARN, OPT_BLOCK_CACHE };

/* A size with an optional K, M, G or T suffix (powers of 1024). */
static int parse_size(const char *opt, const char *arg, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    case 'T': case 't': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'B' || (*end == 'i' && end[1] == 'B'))
        end += *end == 'B' ? 1 : 2;
    if (errno || end == arg || *end || arg[0] == '-' || (shift && v >> (64 - shift))) {
        fprintf(stderr, "vdiskd: %s: expected a size such as 512M, not '%s'\n", opt, arg);
        return -1;
    }
    *out = (uint64_t)v << shift;
    return 0;
}

/* A decimal count for option opt, from min to max; -1 (said) otherwise. */
static int parse_count(const char *opt, const char *arg, unsigned min, unsigned max,
                       unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr, "vdiskd: %s: expected %u to %u, not '%s'\n", opt, min, max, arg);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static void poll_ctx(void *opaque)
{
    struct worker *w = opaque;
    vd_ctx_poll(w->ctx, 0);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "store", required_argument, NULL, OPT_STORE },
        { "tls", required_argument, NULL, OPT_TLS },
        { "tls-certs", required_argument, NULL, OPT_TLS_CERTS },
        { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
        { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "read-only", no_argument, NULL, OPT_READ_ONLY },
        { "cache", required_argument, NULL, OPT_CACHE },
        { "syslog", no_argument, NULL, OPT_SYSLOG },
        { "stdio", no_argument, NULL, OPT_STDIO },
        { "poll-us", required_argument, NULL, OPT_POLL_US },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "control", required_argument, NULL, OPT_CONTROL },
        { "control-group", required_argument, NULL, OPT_CONTROL_GROUP },
        { "control-ro", required_argument, NULL, OPT_CONTROL_RO },
        { "control-ro-group", required_argument, NULL, OPT_CONTROL_RO_GROUP },
        { "space-warn", required_argument, NULL, OPT_SPACE_WARN },
        { "block-cache", required_argument, NULL, OPT_BLOCK_CACHE },
        { "max-connections", required_argument, NULL, OPT_MAX_CONNS },
        { "max-connections-per-client", required_argument, NULL, OPT_MAX_CONNS_CLIENT },
        { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
        { "max-inflight", required_argument, NULL, OPT_MAX_INFLIGHT },
        { "max-payload-memory", required_argument, NULL, OPT_MAX_PAYLOAD_MEMORY },
        { "user", required_argument, NULL, OPT_USER },
        { "foreground", no_argument, NULL, 'f' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    struct vdiskd d = { .poll_us = VDISKD_POLL_US, .space.timer.fd = -1,
                        .pools_timer.fd = -1 };
    const char *store_dir = NULL, *control_path = NULL, *control_group = NULL;
    const char *control_ro = NULL, *control_ro_group = NULL;
    const char *tls_mode_arg = NULL, *tls_certs = NULL, *tls_psk = NULL;
    enum nbds_tls_mode tls = NBDS_TLS_OFF;
    bool tls_verify_peer = false;
    char ctlsock[4200];
    const char **listens = NULL;
    size_t nlisten = 0;
    bool foreground = false, stdio = false;
    uint64_t block_cache = VDISKD_BLOCK_CACHE;
    char def[4096], sock[4200];
    int c, r, ret = 1;

    limits_defaults(&d);
    while ((c = getopt_long(argc, argv, "fvhV", opts, NULL)) != -1) {
        switch (c) {
        case OPT_STORE:
            store_dir = optarg;
            break;
        case OPT_TLS:
            tls_mode_arg = optarg;
            break;
        case OPT_TLS_CERTS:
            tls_certs = optarg;
            break;
        case OPT_TLS_PSK:
            tls_psk = optarg;
            break;
        case OPT_TLS_VERIFY_PEER:
            tls_verify_peer = true;
            break;
        case OPT_LISTEN: {
            const char **n = realloc(listens, (nlisten + 1) * sizeof(*listens));
            if (!n)
                return 1;
            listens = n;
            listens[nlisten++] = optarg;
            break;
        }
        case OPT_CONTROL:
            control_path = optarg;
            break;
        case OPT_CONTROL_GROUP:
            control_group = optarg;
            break;
        case OPT_CONTROL_RO:
            control_ro = optarg;
            break;
        case OPT_CONTROL_RO_GROUP:
            control_ro_group = optarg;
            break;
        case OPT_READ_ONLY:
            d.read_only = true;
            break;
        case OPT_BLOCK_CACHE:
            if (parse_size("--block-cache", optarg, &block_cache) < 0)
                return 2;
            break;
        case OPT_MAX_CONNS:
            if (parse_count("--max-connections", optarg, 0, 1u << 20, &d.max_conns) < 0)
                return 2;
            break;
        case OPT_MAX_CONNS_CLIENT:
            if (parse_count("--max-connections-per-client", optarg, 0, 1u << 20,
                            &d.max_conns_client) < 0)
                return 2;
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            if (parse_count("--handshake-timeout", optarg, 0, 86400, &d.handshake_timeout) < 0)
                return 2;
            break;
        case OPT_MAX_INFLIGHT:
            if (parse_count("--max-inflight", optarg, 1, VDISKD_MAX_INFLIGHT_MAX,
                            &d.max_inflight) < 0)
                return 2;
            break;
        case OPT_MAX_PAYLOAD_MEMORY:
            if (parse_size("--max-payload-memory", optarg, &d.payload_limit) < 0)
                return 2;
            break;
        case OPT_USER:
            if ((r = privs_parse(&d, optarg)) < 0)
                return r == -EPERM ? 1 : 2;
            break;
        case OPT_SPACE_WARN:
            if (space_parse(&d, optarg) < 0) {
                fprintf(stderr, "vdiskd: --space-warn: expected percentages between 0 and "
                        "100, separated by commas, not '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_CACHE:
            if (strcmp(optarg, "none") == 0)
                d.open_flags = 0;
            else if (strcmp(optarg, "writeback") == 0)
                d.open_flags = VD_OPEN_BUFFERED;
            else {
                fprintf(stderr, "vdiskd: --cache: expected none or writeback, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case OPT_POLL_US:
            if (parse_count("--poll-us", optarg, 0, VDISKD_POLL_US_MAX, &d.poll_us) < 0)
                return 2;
            break;
        case OPT_THREADS:
            if (parse_count("--threads", optarg, 1, VDISKD_MAX_THREADS, &d.nworkers) < 0)
                return 2;
            break;
        case OPT_SYSLOG:
            use_syslog = true;
            break;
        case OPT_STDIO:
            stdio = foreground = true;
            break;
        case 'f':
            foreground = true;
            break;
        case 'v':
            vdiskd_verbose++;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vdiskd %s\n", VDISKD_VERSION);
            return 0;
        default:
            fputs("Try 'vdiskd --help' for more information.\n", stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vdiskd: unexpected argument '%s'\n"
                "Try 'vdiskd --help' for more information.\n", argv[optind]);
        return 2;
    }
    if (control_ro_group && !control_ro) {
        fprintf(stderr, "vdiskd: --control-ro-group needs --control-ro PATH\n");
        return 2;
    }
    if (!tls_mode_arg)
        tls = tls_certs || tls_psk ? NBDS_TLS_REQUIRE : NBDS_TLS_OFF;
    else if (strcmp(tls_mode_arg, "off") == 0)
        tls = NBDS_TLS_OFF;
    else if (strcmp(tls_mode_arg, "on") == 0)
        tls = NBDS_TLS_ON;
    else if (strcmp(tls_mode_arg, "require") == 0)
        tls = NBDS_TLS_REQUIRE;
    else {
        fprintf(stderr, "vdiskd: --tls: expected off, on or require, not '%s'\n", tls_mode_arg);
        return 2;
    }
    if (tls != NBDS_TLS_OFF && !tls_certs && !tls_psk) {
        fprintf(stderr, "vdiskd: --tls %s needs credentials: --tls-certs DIR or "
                "--tls-psk FILE\n", tls_mode_arg);
        return 2;
    }
    if (tls_verify_peer && !tls_certs) {
        fprintf(stderr, "vdiskd: --tls-verify-peer needs --tls-certs DIR (with ca-cert.pem)\n");
        return 2;
    }
    if (!store_dir) {
        if ((r = vd_store_default_path(def, sizeof(def))) < 0) {
            fprintf(stderr, "vdiskd: no store: give --store DIR or set VDISK_STORE\n");
            return 1;
        }
        store_dir = def;
    }

    /* Detach before opening anything: LMDB environments, flocks and the
     * libaio context must belong to the process that uses them. */
    if (!foreground) {
        use_syslog = true;
        if (daemon(1, 0) < 0) {
            fprintf(stderr, "vdiskd: daemon: %s\n", strerror(errno));
            return 1;
        }
    }
    if (use_syslog)
        openlog("vdiskd", LOG_PID, LOG_DAEMON);
    signal(SIGPIPE, SIG_IGN);

    pthread_mutex_init(&d.lock, NULL);
    if ((r = privs_store_open(&d, store_dir)) < 0) {
        vlog(LOG_ERR, "store %s: %s", store_dir, *vd_errmsg() ? vd_errmsg() : strerror(-r));
        goto out;
    }
    if ((r = vd_layer_cache_new(&d.cache)) < 0 ||
        (r = vd_layer_cache_set_block_cache(d.cache, block_cache)) < 0) {
        vlog(LOG_ERR, "layer cache: %s", *vd_errmsg() ? vd_errmsg() : strerror(-r));
        goto out;
    }
    if ((r = limits_start(&d)) < 0)
        goto out;
    if (stdio) {
        d.nworkers = 1;
    } else if (!d.nworkers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        d.nworkers = n < 1 ? 1 : n > VDISKD_MAX_THREADS ? VDISKD_MAX_THREADS : (unsigned)n;
    }
    if (tls != NBDS_TLS_OFF &&
        tls_setup(&d, tls, tls_certs, tls_psk, tls_verify_peer) < 0)
        goto out;
    d.workers = calloc(d.nworkers, sizeof(*d.workers));
    if (!d.workers)
        goto out;
    for (unsigned i = 0; i < d.nworkers; i++) {
        if ((r = worker_init(&d, &d.workers[i], i, stdio)) < 0) {
            vlog(LOG_ERR, "event loop %u: %s", i, *vd_errmsg() ? vd_errmsg() : strerror(-r));
            goto out;
        }
    }
    /* --user: root until the sockets are bound, no longer (privs.c);
     * --stdio has none to bind. */
    if (stdio && privs_drop(&d) < 0)
        goto out;
    if (stdio) {
        /* One client on stdin/stdout: no sockets, no epoll loop. */
        struct worker *w = &d.workers[0];
        r = nbds_serve(w->srv, 0, 1, vd_ctx_fd(w->ctx), poll_ctx, w);
        if (r < 0)
            vlog(LOG_ERR, "stdio connection: %s", strerror(-r));
        /* Requests may still be completing: let them finish. */
        while (vd_ctx_inflight(w->ctx))
            vd_ctx_poll(w->ctx, -1);
        ret = r < 0 ? 1 : 0;
        goto out;
    }
    if (nlisten == 0) {
        snprintf(sock, sizeof(sock), "unix:%s/nbd.sock", vd_store_path(d.store));
        if (listen_add(&d, sock) < 0)
            goto out;
    }
    for (size_t i = 0; i < nlisten; i++)
        if (listen_add(&d, listens[i]) < 0)
            goto out;
    if (privs_drop(&d) < 0)
        goto out;
    if (!control_path) {
        snprintf(ctlsock, sizeof(ctlsock), "%s/control.sock", vd_store_path(d.store));
        control_path = ctlsock;
    }
    if (strcmp(control_path, "none") != 0 && control_start(&d, control_path, control_group) < 0)
        goto out;
    if (control_ro && control_start_ro(&d, control_ro, control_ro_group) < 0)
        goto out;
    if ((r = space_start(&d)) < 0)
        vlog(LOG_ERR, "watching free space: %s", strerror(-r));
    if ((r = pools_start(&d)) < 0)
        vlog(LOG_ERR, "pools: %s", strerror(-r));
    vlog(LOG_INFO, "serving store %s%s, cache=%s, %u thread(s)", vd_store_path(d.store),
         d.read_only ? " read-only" : "", d.open_flags ? "writeback" : "none", d.nworkers);
    vlog(LOG_INFO, "limits: %u connection(s), %u per client, handshake %u s, %u request(s) "
         "in flight per connection, payload memory %llu MiB (0: none)", d.max_conns,
         d.max_conns_client, d.handshake_timeout, d.max_inflight,
         (unsigned long long)(d.payload_limit >> 20));

    if ((r = loop_run(&d)) < 0) {
        vlog(LOG_ERR, "event loop: %s", strerror(-r));
        goto out;
    }
    ret = 0;
out:
    if (d.workers) {
        listen_close_all(&d);
        space_stop(&d);
        pools_stop(&d);
        control_stop(&d);
    }
    /* Connections are all gone after loop_run and its threads are joined;
     * on an error path free whatever is left: exports hold chains (on the
     * workers' contexts), chains hold the cache. */
    exports_close_all(&d);
    export_cfg_free(&d);
    for (unsigned i = 0; d.workers && i < d.nworkers; i++)
        worker_fini(&d.workers[i]);
    free(d.workers);
    limits_stop(&d);
    if (d.cache && vd_layer_cache_free(d.cache) < 0)
        vlog(LOG_ERR, "layer cache: %s", vd_errmsg());
    if (d.store)
        vd_store_close(d.store);
    tls_free(&d);
    pthread_mutex_destroy(&d.lock);
    free(listens);
    if (ret == 0)
        vlog(LOG_INFO, "stopped");
    if (use_syslog)
        closelog();
    return ret;
}
