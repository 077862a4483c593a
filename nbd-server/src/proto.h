/*
 * proto.h - NBD wire constants and message layouts (doc/proto.md of the
 * NetworkBlockDevice/nbd project).  All integers on the wire are big endian.
 * The structs below document the layouts; messages are built and parsed
 * byte by byte with the put/get helpers, never by casting buffers.
 */
#ifndef NBDS_PROTO_H
#define NBDS_PROTO_H

#include <stdint.h>

#define NBD_MAGIC                 0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_IHAVEOPT              0x49484156454f5054ull   /* "IHAVEOPT" */
#define NBD_REP_MAGIC             0x0003e889045565a9ull   /* option replies */
#define NBD_REQUEST_MAGIC         0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC    0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* Handshake flags (server, 16 bits) and client flags (32 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1u
#define NBD_OPT_ABORT             2u
#define NBD_OPT_LIST              3u
#define NBD_OPT_STARTTLS          5u
#define NBD_OPT_INFO              6u
#define NBD_OPT_GO                7u
#define NBD_OPT_STRUCTURED_REPLY  8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT  10u

/* Option replies. */
#define NBD_REP_ACK               1u
#define NBD_REP_SERVER            2u
#define NBD_REP_INFO              3u
#define NBD_REP_META_CONTEXT      4u
#define NBD_REP_ERR(n)            ((1u << 31) + (n))
#define NBD_REP_ERR_UNSUP         NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY        NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID       NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM      NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD      NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN       NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN      NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG       NBD_REP_ERR(9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT           0u
#define NBD_INFO_NAME             1u
#define NBD_INFO_DESCRIPTION      2u
#define NBD_INFO_BLOCK_SIZE       3u

/* Commands and command flags. */
#define NBD_CMD_READ              0u
#define NBD_CMD_WRITE             1u
#define NBD_CMD_DISC              2u
#define NBD_CMD_FLUSH             3u
#define NBD_CMD_TRIM              4u
#define NBD_CMD_CACHE             5u
#define NBD_CMD_WRITE_ZEROES      6u
#define NBD_CMD_BLOCK_STATUS      7u

#define NBD_CMD_FLAG_FUA          (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE      (1u << 1)
#define NBD_CMD_FLAG_DF           (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE      (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO    (1u << 4)

/* Structured reply chunk flags and types. */
#define NBD_REPLY_FLAG_DONE       (1u << 0)
#define NBD_REPLY_TYPE_NONE       0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR      ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* Error values on the wire. */
#define NBD_EPERM      1u
#define NBD_EIO        5u
#define NBD_ENOMEM     12u
#define NBD_EINVAL     22u
#define NBD_ENOSPC     28u
#define NBD_EOVERFLOW  75u
#define NBD_ENOTSUP    95u
#define NBD_ESHUTDOWN  108u

/* Layouts (packed: the wire has no padding). */
struct nbd_greeting {            /* server -> client, first message */
    uint64_t magic;              /* NBD_MAGIC */
    uint64_t opt_magic;          /* NBD_IHAVEOPT */
    uint16_t handshake_flags;
} __attribute__((packed));
struct nbd_option_hdr {          /* client -> server */
    uint64_t magic;              /* NBD_IHAVEOPT */
    uint32_t option;
    uint32_t length;             /* then `length` bytes of data */
} __attribute__((packed));
struct nbd_option_reply_hdr {    /* server -> client */
    uint64_t magic;              /* NBD_REP_MAGIC */
    uint32_t option;
    uint32_t reply_type;
    uint32_t length;
} __attribute__((packed));
struct nbd_export_name_reply {   /* after NBD_OPT_EXPORT_NAME; + 124 zeroes */
    uint64_t size;
    uint16_t transmission_flags;
} __attribute__((packed));
struct nbd_request {
    uint32_t magic;              /* NBD_REQUEST_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
} __attribute__((packed));
struct nbd_simple_reply {
    uint32_t magic;              /* NBD_SIMPLE_REPLY_MAGIC */
    uint32_t error;
    uint64_t cookie;
} __attribute__((packed));
struct nbd_structured_reply {
    uint32_t magic;              /* NBD_STRUCTURED_REPLY_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint32_t length;
} __attribute__((packed));

#define NBD_GREETING_SIZE       18u
#define NBD_OPTION_HDR_SIZE     16u
#define NBD_OPTION_REPLY_SIZE   20u
#define NBD_REQUEST_SIZE        28u
#define NBD_SIMPLE_REPLY_SIZE   16u
#define NBD_STRUCTURED_SIZE     20u
#define NBD_EXPORT_NAME_ZEROES  124u

_Static_assert(sizeof(struct nbd_greeting) == NBD_GREETING_SIZE, "greeting");
_Static_assert(sizeof(struct nbd_option_hdr) == NBD_OPTION_HDR_SIZE, "option header");
_Static_assert(sizeof(struct nbd_option_reply_hdr) == NBD_OPTION_REPLY_SIZE, "option reply");
_Static_assert(sizeof(struct nbd_export_name_reply) == 10, "export name reply");
_Static_assert(sizeof(struct nbd_request) == NBD_REQUEST_SIZE, "request");
_Static_assert(sizeof(struct nbd_simple_reply) == NBD_SIMPLE_REPLY_SIZE, "simple reply");
_Static_assert(sizeof(struct nbd_structured_reply) == NBD_STRUCTURED_SIZE, "structured reply");

static inline void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

#endif
