/*
 * handshake.c - fixed newstyle negotiation (proto.md "Newstyle
 * negotiation") and the options: EXPORT_NAME, ABORT, LIST, STARTTLS
 * (proto.md "TLS support": the session itself is tls.c's), INFO, GO,
 * STRUCTURED_REPLY,
 * LIST_META_CONTEXT, SET_META_CONTEXT.  Every option payload has been read
 * whole (up to NBDS_OPT_MAX; longer ones are discarded and answered with
 * NBD_REP_ERR_TOO_BIG) before it is looked at.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const ctx_names[NBDS_CTX_COUNT] = {
    [NBDS_CTX_BASE_ALLOCATION] = "base:allocation",
    [NBDS_CTX_ALLOCATION_DEPTH] = "qemu:allocation-depth",
};

static void opt_reply(struct nbds_conn *c, uint32_t type, const void *d1, size_t l1,
                      const void *d2, size_t l2)
{
    struct nbds_oent *e = nbds_oent_new(NBD_OPTION_REPLY_SIZE + l1 + l2);
    if (!e) {
        nbds_conn_fail(c, -ENOMEM);
        return;
    }
    put64(e->hdr, NBD_REP_MAGIC);
    put32(e->hdr + 8, c->opt);
    put32(e->hdr + 12, type);
    put32(e->hdr + 16, (uint32_t)(l1 + l2));
    if (l1)
        memcpy(e->hdr + NBD_OPTION_REPLY_SIZE, d1, l1);
    if (l2)
        memcpy(e->hdr + NBD_OPTION_REPLY_SIZE + l1, d2, l2);
    nbds_outq_push(c, e);
}

static void opt_ack(struct nbds_conn *c)
{
    opt_reply(c, NBD_REP_ACK, NULL, 0, NULL, 0);
}

static void opt_error(struct nbds_conn *c, uint32_t type, const char *msg)
{
    nbds_debug(c, "option %u: error 0x%x: %s", c->opt, type, msg);
    opt_reply(c, type, msg, strlen(msg), NULL, 0);
}

int nbds_hs_start(struct nbds_conn *c)
{
    struct nbds_oent *e = nbds_oent_new(NBD_GREETING_SIZE);
    if (!e)
        return -ENOMEM;
    put64(e->hdr, NBD_MAGIC);
    put64(e->hdr + 8, NBD_IHAVEOPT);
    put16(e->hdr + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    nbds_outq_push(c, e);
    c->state = IN_CLIENT_FLAGS;
    return 0;
}

void nbds_hs_client_flags(struct nbds_conn *c, uint32_t flags)
{
    /* proto.md: the server MUST drop the connection on unknown flags. */
    if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        nbds_debug(c, "unknown client flags 0x%x", flags);
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    c->fixed_newstyle = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    /* TLS needs fixed newstyle: a server that requires TLS has nothing to
     * offer a client without it. */
    if (c->cfg->tls == NBDS_TLS_REQUIRE && !c->fixed_newstyle) {
        nbds_debug(c, "TLS required, and the client is not fixed newstyle");
        nbds_conn_fail(c, -EACCES);
        return;
    }
    c->state = IN_OPT_HDR;
}

void nbds_hs_option_header(struct nbds_conn *c, const uint8_t *hdr)
{
    if (get64(hdr) != NBD_IHAVEOPT) {
        nbds_debug(c, "bad option magic");
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    c->opt = get32(hdr + 8);
    c->opt_len = get32(hdr + 12);
    /* Non-fixed newstyle knows only EXPORT_NAME; anything else ends it. */
    if (!c->fixed_newstyle && c->opt != NBD_OPT_EXPORT_NAME) {
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    c->opt_too_big = c->opt_len > NBDS_OPT_MAX;
    c->sink = NULL;
    c->sink_len = c->opt_len;
    c->sink_got = 0;
    if (!c->opt_too_big && c->opt_len) {
        c->sink = malloc(c->opt_len);
        if (!c->sink) {
            nbds_conn_fail(c, -ENOMEM);
            return;
        }
    }
    c->state = IN_OPT_DATA;
}

/* Opens `name`: for transmission, or for a query (LIST/SET_META_CONTEXT,
 * INFO) after which the caller closes it at once. */
static int open_export(struct nbds_conn *c, const char *name, void **h,
                       struct nbds_export_info *info, bool query)
{
    memset(info, 0, sizeof(*info));
    *h = NULL;
    c->query_open = query;
    int r = c->cfg->backend->open(c->cfg->opaque, c, name, h, info);
    c->query_open = false;
    if (r < 0) {
        nbds_debug(c, "open \"%s\": errno %d", name, -r);
        return r;
    }
    info->description[sizeof(info->description) - 1] = '\0';
    return 0;
}

static void open_error(struct nbds_conn *c, int r, const char *name)
{
    char msg[128];
    if (r == -EACCES || r == -EPERM) {
        snprintf(msg, sizeof(msg), "access to export \"%.64s\" refused", name);
        opt_error(c, NBD_REP_ERR_POLICY, msg);
    } else if (r == -ENOENT) {
        snprintf(msg, sizeof(msg), "unknown export \"%.64s\"", name);
        opt_error(c, NBD_REP_ERR_UNKNOWN, msg);
    } else if (r == -ESHUTDOWN) {
        opt_error(c, NBD_REP_ERR_SHUTDOWN, "server shutting down");
    } else {
        snprintf(msg, sizeof(msg), "cannot open export \"%.64s\": %s", name,
                 strerror(-r));
        opt_error(c, NBD_REP_ERR_UNKNOWN, msg);
    }
}

/* Becomes the transmission phase on export h (GO, EXPORT_NAME). */
static int start_transmission(struct nbds_conn *c, const char *name, void *h,
                              const struct nbds_export_info *info)
{
    c->export_name = strdup(name);
    if (!c->export_name) {
        c->cfg->backend->close(h);
        return -ENOMEM;
    }
    c->export = h;
    c->info = *info;
    /* Contexts selected for another export do not carry over. */
    if (!c->meta_export || strcmp(c->meta_export, name) != 0)
        memset(c->meta_selected, 0, sizeof(c->meta_selected));
    for (int i = 0; i < NBDS_CTX_COUNT; i++)
        if (!info->contexts[i] || !c->cfg->backend->block_status)
            c->meta_selected[i] = false;
    c->tflags = nbds_tx_flags(c);
    c->transmission = true;
    c->state = IN_REQ_HDR;
    c->paused = c->cfg->pause_at_transmission;
    nbds_debug(c, "export \"%s\": size %llu, flags 0x%x%s", name,
               (unsigned long long)info->size, c->tflags,
               c->structured ? ", structured replies" : "");
    return 0;
}

static void opt_export_name(struct nbds_conn *c, const uint8_t *d, uint32_t len)
{
    /* This option cannot fail politely: any error closes (proto.md). */
    if (len > NBDS_MAX_NAME || memchr(d, 0, len)) {
        nbds_conn_fail(c, -EPROTO);
        return;
    }
    char name[NBDS_MAX_NAME + 1];
    memcpy(name, d, len);
    name[len] = '\0';
    void *h;
    struct nbds_export_info info;
    int r = open_export(c, name, &h, &info, false);
    if (r < 0 || (r = start_transmission(c, name, h, &info)) < 0) {
        nbds_conn_fail(c, r);
        return;
    }
    struct nbds_oent *e = nbds_oent_new(10 + (c->no_zeroes ? 0 : NBD_EXPORT_NAME_ZEROES));
    if (!e) {
        nbds_conn_fail(c, -ENOMEM);
        return;
    }
    put64(e->hdr, info.size);
    put16(e->hdr + 8, c->tflags);
    nbds_outq_push(c, e);
}

static void opt_info_go(struct nbds_conn *c, const uint8_t *d, uint32_t len, bool go)
{
    if (len < 6) {
        opt_error(c, NBD_REP_ERR_INVALID, "option too short");
        return;
    }
    uint32_t nlen = get32(d);
    if (nlen > NBDS_MAX_NAME || nlen > len - 6) {
        opt_error(c, NBD_REP_ERR_INVALID, "bad export name length");
        return;
    }
    uint16_t nreq = get16(d + 4 + nlen);
    if ((uint64_t)4 + nlen + 2 + 2ull * nreq != len) {
        opt_error(c, NBD_REP_ERR_INVALID, "bad option length");
        return;
    }
    if (memchr(d + 4, 0, nlen)) {
        opt_error(c, NBD_REP_ERR_INVALID, "NUL in export name");
        return;
    }
    char name[NBDS_MAX_NAME + 1];
    memcpy(name, d + 4, nlen);
    name[nlen] = '\0';
    bool want_name = false, want_desc = false, want_bs = false;
    for (unsigned i = 0; i < nreq; i++) {
        switch (get16(d + 4 + nlen + 2 + 2 * i)) {
        case NBD_INFO_NAME: want_name = true; break;
        case NBD_INFO_DESCRIPTION: want_desc = true; break;
        case NBD_INFO_BLOCK_SIZE: want_bs = true; break;
        default: break;   /* unknown requests are ignored (proto.md) */
        }
    }
    void *h;
    struct nbds_export_info info;
    int r = open_export(c, name, &h, &info, !go);
    if (r < 0) {
        open_error(c, r, name);
        return;
    }
    /* The flags as transmission would have them. */
    struct nbds_export_info saved = c->info;
    c->info = info;
    uint16_t tflags = nbds_tx_flags(c);
    c->info = saved;
    uint8_t b[12];
    put16(b, NBD_INFO_EXPORT);
    put64(b + 2, info.size);
    put16(b + 10, tflags);
    opt_reply(c, NBD_REP_INFO, b, 12, NULL, 0);
    if (want_name) {
        put16(b, NBD_INFO_NAME);
        opt_reply(c, NBD_REP_INFO, b, 2, name, nlen);
    }
    if (want_desc && info.description[0]) {
        put16(b, NBD_INFO_DESCRIPTION);
        opt_reply(c, NBD_REP_INFO, b, 2, info.description, strlen(info.description));
    }
    /* Sent whenever the export has constraints, asked for or not. */
    if (info.min_block || want_bs) {
        uint32_t min = info.min_block ? info.min_block : 1;
        uint32_t pref = info.pref_block ? info.pref_block : (min > 4096 ? min : 4096);
        uint32_t max = info.max_block ? info.max_block : c->max_payload;
        uint8_t bs[14];
        put16(bs, NBD_INFO_BLOCK_SIZE);
        put32(bs + 2, min);
        put32(bs + 6, pref);
        put32(bs + 10, max);
        opt_reply(c, NBD_REP_INFO, bs, 14, NULL, 0);
    }
    if (!go) {
        c->cfg->backend->close(h);
        opt_ack(c);
        return;
    }
    r = start_transmission(c, name, h, &info);
    if (r < 0) {
        nbds_conn_fail(c, r);
        return;
    }
    opt_ack(c);
}

struct nbds_list {
    struct nbds_conn *c;
    struct nbds_oent *head, **tail;
    int err;
};

int nbds_list_add(struct nbds_list *l, const char *name, const char *description)
{
    size_t nlen = strlen(name), dlen = description ? strlen(description) : 0;
    if (nlen > NBDS_MAX_NAME)
        return -ENAMETOOLONG;
    if (dlen > 4096)
        dlen = 4096;
    struct nbds_oent *e = nbds_oent_new(NBD_OPTION_REPLY_SIZE + 4 + nlen + dlen);
    if (!e)
        return l->err = -ENOMEM;
    put64(e->hdr, NBD_REP_MAGIC);
    put32(e->hdr + 8, NBD_OPT_LIST);
    put32(e->hdr + 12, NBD_REP_SERVER);
    put32(e->hdr + 16, (uint32_t)(4 + nlen + dlen));
    put32(e->hdr + 20, (uint32_t)nlen);
    memcpy(e->hdr + 24, name, nlen);
    if (dlen)
        memcpy(e->hdr + 24 + nlen, description, dlen);
    *l->tail = e;
    l->tail = &e->next;
    return 0;
}

static void opt_list(struct nbds_conn *c, uint32_t len)
{
    if (len != 0) {
        opt_error(c, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
        return;
    }
    if (!c->cfg->backend->list) {
        opt_error(c, NBD_REP_ERR_POLICY, "listing exports is not allowed");
        return;
    }
    struct nbds_list l = { .c = c, .head = NULL, .tail = &l.head };
    int r = c->cfg->backend->list(c->cfg->opaque, c, &l);
    if (r == 0 && l.err)
        r = l.err;
    struct nbds_oent *e = l.head;
    while (e) {
        struct nbds_oent *next = e->next;
        if (r == 0)
            nbds_outq_push(c, e);
        else
            free(e);
        e = next;
    }
    if (r == -ESHUTDOWN)
        opt_error(c, NBD_REP_ERR_SHUTDOWN, "server shutting down");
    else if (r < 0)
        opt_error(c, NBD_REP_ERR_POLICY, "listing exports failed");
    else
        opt_ack(c);
}

/* LIST_META_CONTEXT and SET_META_CONTEXT share one layout: export name,
 * then a count of queries.  An empty list means all contexts for LIST and
 * none for SET; for LIST a bare namespace ("base:") matches every context
 * in it; otherwise a query selects the context of exactly that name, and
 * unknown ones are ignored (proto.md "Metadata querying"). */
static void opt_meta(struct nbds_conn *c, const uint8_t *d, uint32_t len, bool set)
{
    if (set) {
        memset(c->meta_selected, 0, sizeof(c->meta_selected));
        free(c->meta_export);
        c->meta_export = NULL;
    }
    if (!c->structured) {
        opt_error(c, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        return;
    }
    if (len < 8) {
        opt_error(c, NBD_REP_ERR_INVALID, "option too short");
        return;
    }
    uint32_t nlen = get32(d);
    if (nlen > NBDS_MAX_NAME || nlen > len - 8) {
        opt_error(c, NBD_REP_ERR_INVALID, "bad export name length");
        return;
    }
    uint32_t nq = get32(d + 4 + nlen);
    size_t pos = 8 + nlen;
    bool match[NBDS_CTX_COUNT] = { false };
    for (uint32_t i = 0; i < nq; i++) {
        if (len - pos < 4) {
            opt_error(c, NBD_REP_ERR_INVALID, "bad query list");
            return;
        }
        uint32_t ql = get32(d + pos);
        pos += 4;
        if (ql > len - pos) {
            opt_error(c, NBD_REP_ERR_INVALID, "bad query length");
            return;
        }
        const char *q = (const char *)d + pos;
        pos += ql;
        for (int k = 0; k < NBDS_CTX_COUNT; k++) {
            const char *n = ctx_names[k];
            size_t ns = (size_t)(strchr(n, ':') - n) + 1;
            if ((ql == strlen(n) && memcmp(q, n, ql) == 0) ||
                (!set && ql == ns && memcmp(q, n, ns) == 0))
                match[k] = true;
        }
    }
    if (pos != len) {
        opt_error(c, NBD_REP_ERR_INVALID, "trailing data");
        return;
    }
    if (nq == 0 && !set)
        for (int k = 0; k < NBDS_CTX_COUNT; k++)
            match[k] = true;
    if (memchr(d + 4, 0, nlen)) {
        opt_error(c, NBD_REP_ERR_INVALID, "NUL in export name");
        return;
    }
    char name[NBDS_MAX_NAME + 1];
    memcpy(name, d + 4, nlen);
    name[nlen] = '\0';
    void *h;
    struct nbds_export_info info;
    int r = open_export(c, name, &h, &info, true);
    if (r < 0) {
        open_error(c, r, name);
        return;
    }
    c->cfg->backend->close(h);
    if (set) {
        c->meta_export = strdup(name);
        if (!c->meta_export) {
            nbds_conn_fail(c, -ENOMEM);
            return;
        }
    }
    for (int k = 0; k < NBDS_CTX_COUNT; k++) {
        if (!match[k] || !info.contexts[k] || !c->cfg->backend->block_status)
            continue;
        uint8_t id[4];
        /* LIST ids are reserved (0); SET ids are what BLOCK_STATUS uses. */
        put32(id, set ? (uint32_t)k + 1 : 0);
        opt_reply(c, NBD_REP_META_CONTEXT, id, 4, ctx_names[k], strlen(ctx_names[k]));
        if (set)
            c->meta_selected[k] = true;
    }
    opt_ack(c);
}

static void opt_starttls(struct nbds_conn *c, uint32_t len)
{
    if (c->tls != NBDS_CONN_TLS_OFF) {
        opt_error(c, NBD_REP_ERR_INVALID, "TLS is already up");
        return;
    }
    if (len != 0) {
        opt_error(c, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
        return;
    }
    if (c->cfg->tls == NBDS_TLS_OFF || !c->cfg->tls_context) {
        opt_error(c, NBD_REP_ERR_UNSUP, "TLS is not enabled on this server");
        return;
    }
    if (!c->fixed_newstyle || c->in_fd != c->out_fd) {
        opt_error(c, NBD_REP_ERR_POLICY, c->fixed_newstyle ? "TLS needs a socket"
                                                           : "TLS needs fixed newstyle");
        return;
    }
    opt_ack(c);
    c->tls = NBDS_CONN_TLS_ACKED;
    /* What was negotiated before could have been a man in the middle's:
     * the client negotiates again under TLS. */
    c->structured = false;
    memset(c->meta_selected, 0, sizeof(c->meta_selected));
    free(c->meta_export);
    c->meta_export = NULL;
}

void nbds_hs_option(struct nbds_conn *c, const uint8_t *data)
{
    static const uint8_t none[1];
    uint32_t len = c->opt_len;
    if (!data)
        data = none;   /* empty payload: keep memchr/memcpy defined */
    c->state = IN_OPT_HDR;
    nbds_debug(c, "option %u, %u bytes", c->opt, len);
    if (c->opt_too_big) {
        if (c->opt == NBD_OPT_EXPORT_NAME)
            nbds_conn_fail(c, -EPROTO);
        else
            opt_error(c, NBD_REP_ERR_TOO_BIG, "option too long");
        return;
    }
    /* FORCEDTLS (proto.md): before TLS, STARTTLS and ABORT only.
     * EXPORT_NAME cannot be answered with an error: the session ends. */
    if (c->cfg->tls == NBDS_TLS_REQUIRE && c->tls != NBDS_CONN_TLS_UP &&
        c->opt != NBD_OPT_STARTTLS && c->opt != NBD_OPT_ABORT) {
        if (c->opt == NBD_OPT_EXPORT_NAME) {
            nbds_debug(c, "NBD_OPT_EXPORT_NAME before TLS, which is required");
            nbds_conn_fail(c, -EACCES);
        } else {
            opt_error(c, NBD_REP_ERR_TLS_REQD, "TLS is required: NBD_OPT_STARTTLS first");
        }
        return;
    }
    switch (c->opt) {
    case NBD_OPT_EXPORT_NAME:
        opt_export_name(c, data, len);
        break;
    case NBD_OPT_ABORT:
        opt_ack(c);
        nbds_conn_end(c, 0);
        break;
    case NBD_OPT_LIST:
        opt_list(c, len);
        break;
    case NBD_OPT_STARTTLS:
        opt_starttls(c, len);
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        opt_info_go(c, data, len, c->opt == NBD_OPT_GO);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (len != 0) {
            opt_error(c, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
            break;
        }
        c->structured = true;
        opt_ack(c);
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        opt_meta(c, data, len, c->opt == NBD_OPT_SET_META_CONTEXT);
        break;
    default:
        opt_error(c, NBD_REP_ERR_UNSUP, "unknown option");
        break;
    }
}
