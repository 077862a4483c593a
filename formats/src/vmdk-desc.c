/*
 * vmdk-desc.c - the VMDK descriptor: parsing its text, opening the extent
 * files a descriptor file names, writing the text for a new disk.
 *
 * A descriptor (VMDK specification 1.1, "The Descriptor File") is lines of
 * text: comments ('#'), settings (key = value, the value maybe quoted) and
 * extent lines:
 *
 *   RW 4192256 SPARSE "disk-s001.vmdk"
 *   RDONLY 8388608 FLAT "disk-flat.vmdk" 0
 *   RW 2048 ZERO
 *
 * access, size in sectors, type, file name, and for FLAT extents the
 * offset in the file in sectors.  The text may come from anywhere (a raw
 * disk a guest wrote may look like a descriptor), so the parser is strict:
 * a line that is none of these makes the text invalid.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmdk.h"

#define DESC_HEADER "# Disk DescriptorFile"

/* Create types whose extents this driver may read (the extent types decide
 * the rest).  Raw device mappings (fullDevice, vmfsRawDeviceMap...) name
 * devices, not image files, and are refused. */
static const char *const read_types[] = {
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse",
    "vmfsThin", "vmfsPreallocated", "vmfsEagerZeroedThick", NULL,
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_control(char c)
{
    return (unsigned char)c < 0x20 || c == 0x7f;
}

/* Up to size - 1 bytes of s for a message, control characters (a
 * terminal's escapes) replaced: the text is the image's, not ours. */
static const char *shown(char *buf, size_t size, const char *s)
{
    size_t i;

    for (i = 0; i + 1 < size && s[i]; i++)
        buf[i] = is_control(s[i]) ? '?' : s[i];
    buf[i] = '\0';
    return buf;
}

bool vmdk_desc_probe(const uint8_t *buf, size_t len)
{
    size_t i = 0;

    while (i < len && (is_blank((char)buf[i]) || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    return len - i >= strlen(DESC_HEADER) &&
           memcmp(buf + i, DESC_HEADER, strlen(DESC_HEADER)) == 0;
}

/* Parses a decimal uint64 at *p (digits only), advancing *p. */
static bool parse_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;

    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return true;
}

/* A CID: 1 to 8 hex digits, the whole value. */
static bool parse_cid(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    size_t n = 0;

    for (; *s; s++, n++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            return false;
        if (n == 8)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    if (n == 0)
        return false;
    *out = v;
    return true;
}

static const char *next_word(const char *p)
{
    while (is_blank(*p))
        p++;
    return p;
}

/* Parses one extent line (NUL-terminated, trimmed) into *e. */
static int parse_extent(const char *path, unsigned lineno, const char *line,
                        struct vmdk_desc_extent *e)
{
    const char *p = line, *q;
    char type[16], show[24];
    size_t n;

    memset(e, 0, sizeof(*e));
    if (strncmp(p, "RW", 2) == 0 && is_blank(p[2])) {
        p += 2;
    } else if (strncmp(p, "RDONLY", 6) == 0 && is_blank(p[6])) {
        e->rdonly = true;
        p += 6;
    } else {
        return fmt_err(-ENOTSUP, "%s: descriptor line %u: NOACCESS extents are "
                       "not supported", path, lineno);
    }
    p = next_word(p);
    if (!parse_u64(&p, &e->sectors) || !is_blank(*p) || e->sectors == 0)
        return fmt_err(-EUCLEAN, "%s: descriptor line %u: bad extent size",
                       path, lineno);
    p = next_word(p);
    for (n = 0; p[n] && !is_blank(p[n]); n++)
        ;
    if (n == 0 || n >= sizeof(type))
        return fmt_err(-EUCLEAN, "%s: descriptor line %u: bad extent type",
                       path, lineno);
    memcpy(type, p, n);
    type[n] = '\0';
    p = next_word(p + n);
    if (strcmp(type, "FLAT") == 0 || strcmp(type, "VMFS") == 0)
        e->type = VMDK_EXT_FLAT;
    else if (strcmp(type, "SPARSE") == 0)
        e->type = VMDK_EXT_SPARSE;
    else if (strcmp(type, "ZERO") == 0)
        e->type = VMDK_EXT_ZERO;
    else
        return fmt_err(-ENOTSUP, "%s: descriptor line %u: extent type %s is not "
                       "supported", path, lineno, shown(show, sizeof(show), type));

    if (*p == '"') {
        q = strchr(p + 1, '"');
        if (!q || q == p + 1)
            return fmt_err(-EUCLEAN, "%s: descriptor line %u: bad extent file "
                           "name", path, lineno);
        for (const char *c = p + 1; c < q; c++)
            if (is_control(*c))
                return fmt_err(-EUCLEAN, "%s: descriptor line %u: control "
                               "characters in the extent file name", path, lineno);
        e->file = strndup(p + 1, (size_t)(q - p - 1));
        if (!e->file)
            return fmt_err(-ENOMEM, "%s: out of memory", path);
        p = next_word(q + 1);
    } else if (e->type != VMDK_EXT_ZERO) {
        return fmt_err(-EUCLEAN, "%s: descriptor line %u: the extent names no "
                       "file", path, lineno);
    }
    if (*p) {
        /* Only a FLAT extent has an offset; VMware writes it always, qemu
         * too, but its absence means 0. */
        if (e->type != VMDK_EXT_FLAT || !parse_u64(&p, &e->offset))
            goto bad;
        p = next_word(p);
        if (*p)
            goto bad;
    }
    return 0;
bad:
    free(e->file);
    e->file = NULL;
    return fmt_err(-EUCLEAN, "%s: descriptor line %u: unexpected '%s' in an "
                   "extent line", path, lineno, shown(show, 21, p));
}

/* Handles a key = value line. */
static int parse_setting(const char *path, unsigned lineno, char *line,
                         struct vmdk_desc *d)
{
    char *eq = strchr(line, '='), *key = line, *val, *end;
    char **dst = NULL, show[24];

    end = eq;
    while (end > key && is_blank(end[-1]))
        end--;
    *end = '\0';
    val = (char *)next_word(eq + 1);
    end = val + strlen(val);
    if (*val == '"') {
        if (end - val < 2 || end[-1] != '"')
            return fmt_err(-EUCLEAN, "%s: descriptor line %u: unterminated quote",
                           path, lineno);
        val++;
        *--end = '\0';
    }

    if (strcmp(key, "version") == 0) {
        if (strcmp(val, "1") && strcmp(val, "2") && strcmp(val, "3"))
            return fmt_err(-ENOTSUP, "%s: descriptor version %s is not "
                           "supported", path, shown(show, 17, val));
    } else if (strcmp(key, "CID") == 0) {
        if (!parse_cid(val, &d->cid))
            return fmt_err(-EUCLEAN, "%s: descriptor line %u: bad CID", path,
                           lineno);
        d->has_cid = true;
    } else if (strcmp(key, "parentCID") == 0) {
        if (!parse_cid(val, &d->parent_cid))
            return fmt_err(-EUCLEAN, "%s: descriptor line %u: bad parentCID",
                           path, lineno);
    } else if (strcmp(key, "createType") == 0) {
        dst = &d->create_type;
    } else if (strcmp(key, "parentFileNameHint") == 0) {
        dst = &d->parent_hint;
    }
    if (dst) {
        free(*dst);
        *dst = strdup(val);
        if (!*dst)
            return fmt_err(-ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

static bool is_extent_line(const char *p)
{
    static const char *const access[] = { "RW", "RDONLY", "NOACCESS", NULL };

    for (unsigned i = 0; access[i]; i++) {
        size_t n = strlen(access[i]);
        if (strncmp(p, access[i], n) == 0 && is_blank(p[n]))
            return true;
    }
    return false;
}

int vmdk_desc_parse(const char *path, const char *text, size_t len, bool extents,
                    struct vmdk_desc *d)
{
    char *copy = NULL, *line, *next;
    const char *nul;
    unsigned lineno = 0, cap = 0;
    uint64_t total = 0;
    int ret;

    memset(d, 0, sizeof(*d));
    d->parent_cid = VMDK_CID_NOPARENT;
    /* The text ends at the first NUL, and what follows is ignored: qemu
     * pads its descriptors with NULs, and when it rewrites one in place
     * with a shorter CID the old text's tail stays after the new NUL. */
    nul = memchr(text, '\0', len);
    if (nul)
        len = (size_t)(nul - text);
    copy = strndup(text, len);
    if (!copy)
        return fmt_err(-ENOMEM, "%s: out of memory", path);

    for (line = copy; line; line = next) {
        char *end;

        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        end = line + strlen(line);
        while (end > line && (is_blank(end[-1]) || end[-1] == '\r'))
            *--end = '\0';
        line = (char *)next_word(line);
        if (*line == '\0' || *line == '#')
            continue;

        if (is_extent_line(line)) {
            struct vmdk_desc_extent *e;

            if (!extents)
                continue;
            if (d->n_ext == VMDK_MAX_EXTENTS) {
                ret = fmt_err(-ENOTSUP, "%s: the descriptor names more than %u "
                              "extents", path, VMDK_MAX_EXTENTS);
                goto out;
            }
            if (d->n_ext == cap) {
                unsigned ncap = cap ? cap * 2 : 8;
                e = realloc(d->ext, ncap * sizeof(*e));
                if (!e) {
                    ret = fmt_err(-ENOMEM, "%s: out of memory", path);
                    goto out;
                }
                d->ext = e;
                cap = ncap;
            }
            e = &d->ext[d->n_ext];
            ret = parse_extent(path, lineno, line, e);
            if (ret < 0)
                goto out;
            d->n_ext++;
            total += e->sectors;
            if (e->sectors > FMT_MAX_SIZE / VMDK_SECTOR ||
                total > FMT_MAX_SIZE / VMDK_SECTOR) {
                ret = fmt_err(-EFBIG, "%s: the extents add up to more than "
                              "%llu bytes", path, (unsigned long long)FMT_MAX_SIZE);
                goto out;
            }
        } else if (strchr(line, '=')) {
            ret = parse_setting(path, lineno, line, d);
            if (ret < 0)
                goto out;
        } else {
            ret = fmt_err(-EUCLEAN, "%s: descriptor line %u is neither a setting "
                          "nor an extent", path, lineno);
            goto out;
        }
    }

    if (extents) {
        bool known = false;
        char show[72];

        if (!d->create_type) {
            ret = fmt_err(-EUCLEAN, "%s: the descriptor has no createType", path);
            goto out;
        }
        for (unsigned i = 0; read_types[i]; i++)
            known = known || strcmp(d->create_type, read_types[i]) == 0;
        if (!known) {
            ret = fmt_err(-ENOTSUP, "%s: VMDK create type '%s' is not "
                          "supported", path, shown(show, 65, d->create_type));
            goto out;
        }
        if (d->n_ext == 0) {
            ret = fmt_err(-EUCLEAN, "%s: the descriptor names no extents", path);
            goto out;
        }
    }
    ret = 0;
out:
    free(copy);
    if (ret < 0)
        vmdk_desc_free(d);
    return ret;
}

/* ------------------------------------------------------------------ */
/* Opening a descriptor file and its extents                           */
/* ------------------------------------------------------------------ */

/* The path of the extent file name, as the descriptor names it. */
static int extent_path(const struct fmt_image *img, const char *name, char **out)
{
    const char *slash = strrchr(img->path, '/');

    if (img->probed && (strchr(name, '/') || strcmp(name, ".") == 0 ||
                        strcmp(name, "..") == 0))
        return fmt_err(-EPERM, "%s: the descriptor names the extent file \"%s\", "
                       "not a plain file name in its own directory; pass -f vmdk "
                       "to open an image whose descriptor names files elsewhere",
                       img->path, name);
    if (name[0] == '/' || !slash)
        *out = strdup(name);
    else if (asprintf(out, "%.*s%s", (int)(slash - img->path + 1), img->path,
                      name) < 0)
        *out = NULL;
    if (!*out)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    return 0;
}

static int open_extent(struct fmt_image *img, struct vmdk_state *st,
                       const struct vmdk_desc_extent *de, struct vmdk_extent *e)
{
    struct stat sb;
    int ret;

    e->len = de->sectors * VMDK_SECTOR;
    e->type = de->type;
    if (de->type == VMDK_EXT_ZERO)
        return 0;
    ret = extent_path(img, de->file, &e->path);
    if (ret < 0)
        return ret;
    /* O_NONBLOCK: a FIFO named here must not hang the open; it is refused
     * below, and the flag dropped for the files that are kept. */
    e->fd = open(e->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (e->fd < 0)
        return fmt_err(-errno, "%s: cannot open extent file %s: %s", img->path,
                       e->path, strerror(errno));
    e->own_fd = true;
    if (fstat(e->fd, &sb) < 0 || fcntl(e->fd, F_SETFL, 0) < 0)
        return fmt_err(-errno, "%s: %s", e->path, strerror(errno));
    /* A block device is a flat extent's usual home on ESX; only when the
     * user asked for vmdk. */
    if (S_ISBLK(sb.st_mode) && de->type == VMDK_EXT_FLAT && !img->probed) {
        off_t end = lseek(e->fd, 0, SEEK_END);
        if (end < 0)
            return fmt_err(-errno, "%s: %s", e->path, strerror(errno));
        e->file_size = (uint64_t)end;
    } else if (S_ISREG(sb.st_mode)) {
        e->file_size = (uint64_t)sb.st_size;
    } else {
        return fmt_err(img->probed ? -EPERM : -EUCLEAN, "%s: extent %s is not a "
                       "regular file", img->path, e->path);
    }

    if (de->type == VMDK_EXT_SPARSE) {
        ret = vmdk_sparse_open(st, e, NULL);
        if (ret == 0 && e->sp.capacity < de->sectors)
            ret = fmt_err(-EUCLEAN, "%s: the descriptor gives the extent %llu "
                          "sectors, its header %llu", e->path,
                          (unsigned long long)de->sectors,
                          (unsigned long long)e->sp.capacity);
        return ret;
    }
    if (de->offset > e->file_size / VMDK_SECTOR ||
        de->offset * VMDK_SECTOR + e->len > e->file_size)
        return fmt_err(-EUCLEAN, "%s: the extent file is %llu bytes, shorter than "
                       "its extent (%llu bytes from sector %llu)", e->path,
                       (unsigned long long)e->file_size,
                       (unsigned long long)e->len, (unsigned long long)de->offset);
    e->flat_offset = de->offset * VMDK_SECTOR;
    return 0;
}

int vmdk_desc_open(struct fmt_image *img, struct vmdk_state *st)
{
    char *text;
    uint64_t start = 0;
    int ret;

    if (img->file_size > VMDK_MAX_DESC)
        return fmt_err(-EUCLEAN, "%s: not a VMDK image: no sparse extent header, "
                       "and larger than a descriptor file (%u KiB)", img->path,
                       VMDK_MAX_DESC >> 10);
    text = malloc(img->file_size + 1);
    if (!text)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    ret = fmt_pread(img, text, img->file_size, 0, "descriptor");
    if (ret == 0)
        ret = vmdk_desc_parse(img->path, text, img->file_size, true, &st->desc);
    free(text);
    if (ret < 0)
        return ret;

    st->ext = calloc(st->desc.n_ext, sizeof(*st->ext));
    if (!st->ext)
        return fmt_err(-ENOMEM, "%s: out of memory", img->path);
    for (unsigned i = 0; i < st->desc.n_ext; i++) {
        struct vmdk_extent *e = &st->ext[i];

        e->fd = -1;
        st->n_ext++;
        ret = open_extent(img, st, &st->desc.ext[i], e);
        if (ret < 0)
            return ret;
        e->start = start;
        start += e->len;
    }
    img->size = start;
    return 0;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
    for (unsigned i = 0; i < d->n_ext; i++)
        free(d->ext[i].file);
    free(d->ext);
    free(d->create_type);
    free(d->parent_hint);
    memset(d, 0, sizeof(*d));
}

char *vmdk_desc_format(uint32_t cid, const char *create_type, uint64_t sectors,
                       const char *file)
{
    /* IDE geometry (16 heads, 63 sectors a track), as qemu-img and VMware
     * write for an "ide" adapter; the cylinders stop at the ATA limit. */
    uint64_t cylinders = MIN(sectors / (16 * 63), 16383);
    char *s;

    if (asprintf(&s,
                 DESC_HEADER "\n"
                 "version=1\n"
                 "CID=%08" PRIx32 "\n"
                 "parentCID=ffffffff\n"
                 "createType=\"%s\"\n"
                 "\n"
                 "# Extent description\n"
                 "RW %" PRIu64 " SPARSE \"%s\"\n"
                 "\n"
                 "# The Disk Data Base\n"
                 "#DDB\n"
                 "\n"
                 "ddb.virtualHWVersion = \"4\"\n"
                 "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
                 "ddb.geometry.heads = \"16\"\n"
                 "ddb.geometry.sectors = \"63\"\n"
                 "ddb.adapterType = \"ide\"\n",
                 cid, create_type, sectors, file, cylinders) < 0)
        return NULL;
    return s;
}
