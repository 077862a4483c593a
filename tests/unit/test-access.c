/*
 * test-access.c - access rules (vdisk.h, "access rules"): identities as
 * users type them, the one function that matches an identity with a
 * client (vd_identity_match) and the decision over a list of rules, then
 * the rules in the catalog: allow, deny, the pool's fallback to its
 * template, and rules going with their object.
 *
 * The unix:user= and vd_peer_is_user cases use root (uid 0) and nobody
 * (65534), which every Debian system has.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define assert_contains(hay, needle) \
    do { \
        const char *h_ = (hay), *n_ = (needle); \
        if (!h_ || !strstr(h_, n_)) \
            fail_msg("'%s' does not contain '%s'", h_ ? h_ : "(null)", n_); \
    } while (0)

/* ---- identities ---- */

static void parse_ok(const char *in, const char *want)
{
    char out[VD_IDENTITY_MAX + 1];
    int r = vd_identity_parse(in, out);
    if (r != 0)
        fail_msg("vd_identity_parse(%s) = %d: %s", in, r, vd_errmsg());
    assert_string_equal(out, want);
}

static void parse_bad(const char *in, const char *msg_part)
{
    char out[VD_IDENTITY_MAX + 1];
    assert_int_equal(vd_identity_parse(in, out), -EINVAL);
    assert_contains(vd_errmsg(), msg_part);
}

static void test_parse(void **state)
{
    (void)state;
    parse_ok("any", "any");
    parse_ok("unix:uid=1000", "unix:uid=1000");
    parse_ok("unix:uid=0", "unix:uid=0");
    parse_ok("unix:uid=007", "unix:uid=7");            /* canonical: what deny finds */
    parse_ok("unix:gid=4294967294", "unix:gid=4294967294");
    parse_ok("unix:user=alice", "unix:user=alice");
    parse_ok("unix:user=host$", "unix:user=host$");
    parse_ok("unix:user=bob@EXAMPLE.COM", "unix:user=bob@EXAMPLE.COM");
    parse_ok("x509:client.example.com", "x509:client.example.com");
    parse_ok("x509:Jane Doe, Ops", "x509:Jane Doe, Ops");
    parse_ok("psk:alice", "psk:alice");

    parse_bad("", "1 to");
    parse_bad(NULL, "1 to");
    parse_bad("anyone", "expected unix:uid=N");
    parse_bad("ANY", "expected");
    parse_bad("unix:uid=", "number");
    parse_bad("unix:uid=-1", "number");
    parse_bad("unix:uid=+1", "number");
    parse_bad("unix:uid=4294967295", "number");     /* (uid_t)-1 is no uid */
    parse_bad("unix:uid=99999999999", "number");
    parse_bad("unix:uid=12x", "number");
    parse_bad("unix:gid=", "number");
    parse_bad("unix:user=", "user name");
    parse_bad("unix:user=-x", "user name");
    parse_bad("unix:user=a b", "user name");
    parse_bad("unix:user=a/b", "user name");
    parse_bad("unix:pid=1", "unix:uid=N");
    parse_bad("unix:", "unix:uid=N");
    parse_bad("x509:", "name after");
    parse_bad("x509:a\nb", "control");
    parse_bad("psk:", "name after");
    parse_bad("psk:a:b", "':'");
    char longid[400];
    memset(longid, 'a', sizeof(longid));
    memcpy(longid, "x509:", 5);
    longid[sizeof(longid) - 1] = '\0';
    parse_bad(longid, "1 to");
}

/* ---- matching ---- */

static struct vd_peer unix_peer(uint32_t uid, uint32_t gid, const uint32_t *g, size_t ng)
{
    return (struct vd_peer){ .has_cred = true, .uid = uid, .gid = gid, .groups = g,
                             .ngroups = ng };
}

static void test_match_unix(void **state)
{
    (void)state;
    static const uint32_t groups[] = { 24, 100 };
    struct vd_peer p = unix_peer(1000, 1000, groups, 2);
    assert_true(vd_identity_match("any", &p));
    assert_true(vd_identity_match("unix:uid=1000", &p));
    assert_false(vd_identity_match("unix:uid=1001", &p));
    assert_false(vd_identity_match("unix:uid=100", &p));
    assert_true(vd_identity_match("unix:gid=1000", &p));   /* primary */
    assert_true(vd_identity_match("unix:gid=100", &p));    /* supplementary */
    assert_true(vd_identity_match("unix:gid=24", &p));
    assert_false(vd_identity_match("unix:gid=25", &p));
    assert_false(vd_identity_match("x509:1000", &p));
    assert_false(vd_identity_match("psk:1000", &p));
    /* Garbage in the catalog names nobody. */
    assert_false(vd_identity_match("unix:uid=", &p));
    assert_false(vd_identity_match("unix:uid=1000x", &p));
    assert_false(vd_identity_match("unix:what=1000", &p));
    assert_false(vd_identity_match("", &p));
    assert_false(vd_identity_match("bogus", &p));

    /* unix:user= is looked up: root is uid 0, nobody 65534. */
    struct vd_peer root = unix_peer(0, 0, NULL, 0), nobody = unix_peer(65534, 65534, NULL, 0);
    assert_true(vd_identity_match("unix:user=root", &root));
    assert_false(vd_identity_match("unix:user=root", &nobody));
    assert_true(vd_identity_match("unix:user=nobody", &nobody));
    assert_false(vd_identity_match("unix:user=no-such-user-here", &root));

    /* A client without unix credentials (TCP) is no unix peer, even with
     * the zero uid its struct holds. */
    struct vd_peer tcp = { 0 };
    assert_false(vd_identity_match("unix:uid=0", &tcp));
    assert_false(vd_identity_match("unix:gid=0", &tcp));
    assert_false(vd_identity_match("unix:user=root", &tcp));
    assert_true(vd_identity_match("any", &tcp));
}

static void test_match_tls(void **state)
{
    (void)state;
    static const char *const sans[] = { "client.example.com", "ops@example.com" };
    struct vd_peer x = { .auth = VD_PEER_AUTH_X509, .name = "Jane Doe", .alt_names = sans,
                         .nalt = 2 };
    assert_true(vd_identity_match("x509:Jane Doe", &x));
    assert_true(vd_identity_match("x509:client.example.com", &x));
    assert_true(vd_identity_match("x509:ops@example.com", &x));
    assert_false(vd_identity_match("x509:jane doe", &x));       /* exactly */
    assert_false(vd_identity_match("x509:example.com", &x));
    assert_false(vd_identity_match("psk:Jane Doe", &x));        /* a certificate is no PSK */
    assert_false(vd_identity_match("unix:uid=0", &x));

    struct vd_peer k = { .auth = VD_PEER_AUTH_PSK, .name = "alice" };
    assert_true(vd_identity_match("psk:alice", &k));
    assert_false(vd_identity_match("psk:bob", &k));
    assert_false(vd_identity_match("x509:alice", &k));

    /* TLS without a client identity, over a unix socket: only the unix part. */
    struct vd_peer both = unix_peer(1000, 1000, NULL, 0);
    both.auth = VD_PEER_AUTH_NONE;
    both.name = "alice";
    assert_false(vd_identity_match("psk:alice", &both));
    assert_false(vd_identity_match("x509:alice", &both));
    assert_true(vd_identity_match("unix:uid=1000", &both));
}

static void test_decide(void **state)
{
    (void)state;
    struct vd_peer p = unix_peer(1000, 1000, NULL, 0), q = unix_peer(2000, 2000, NULL, 0);
    /* No rules: open, read-write. */
    assert_int_equal(vd_access_decide(NULL, 0, &p), VD_ACCESS_READ_WRITE);
    struct vd_access_rule r[3] = {
        { "any", VD_ACCESS_READ_ONLY },
        { "unix:uid=1000", VD_ACCESS_READ_WRITE },
        { "psk:x", VD_ACCESS_READ_WRITE },
    };
    /* The most a matching rule gives, whatever the order. */
    assert_int_equal(vd_access_decide(r, 3, &p), VD_ACCESS_READ_WRITE);
    assert_int_equal(vd_access_decide(r, 3, &q), VD_ACCESS_READ_ONLY);
    assert_int_equal(vd_access_decide(r + 1, 2, &q), VD_ACCESS_NONE);
    struct vd_access_rule rev[2] = { r[1], r[0] };
    assert_int_equal(vd_access_decide(rev, 2, &p), VD_ACCESS_READ_WRITE);
}

static void test_peer_is_user(void **state)
{
    (void)state;
    struct vd_peer root = unix_peer(0, 0, NULL, 0), nobody = unix_peer(65534, 65534, NULL, 0);
    assert_true(vd_peer_is_user(&root, "root"));
    assert_false(vd_peer_is_user(&root, "nobody"));
    assert_true(vd_peer_is_user(&nobody, "nobody"));
    struct vd_peer k = { .auth = VD_PEER_AUTH_PSK, .name = "alice" };
    assert_true(vd_peer_is_user(&k, "alice"));
    assert_false(vd_peer_is_user(&k, "bob"));
    struct vd_peer x = { .auth = VD_PEER_AUTH_X509, .name = "bob" };
    assert_true(vd_peer_is_user(&x, "bob"));
    struct vd_peer tcp = { .name = "alice" };   /* a name without TLS auth counts for nothing */
    assert_false(vd_peer_is_user(&tcp, "alice"));
    assert_false(vd_peer_is_user(&tcp, "root"));
}

/* ---- the catalog ---- */

static struct vd_store *mkstore(struct tenv *e)
{
    struct vd_store *st = NULL;
    assert_int_equal(vd_store_open(tpath(e, "store"), VD_STORE_CREATE, &st), 0);
    return st;
}

static void expect_rules(struct vd_store *st, const char *obj, const char *from,
                         size_t n, const struct vd_access_rule *want)
{
    struct vd_access_rule *r = NULL;
    size_t got = 99;
    char f[VD_NAME_MAX + 6] = "";
    int rc = vd_access_rules(st, obj, &r, &got, f);
    if (rc != 0)
        fail_msg("vd_access_rules(%s) = %d: %s", obj, rc, vd_errmsg());
    assert_int_equal(got, n);
    if (n)
        assert_string_equal(f, from);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(r[i].identity, want[i].identity);
        assert_int_equal(r[i].access, want[i].access);
    }
    if (!n)
        assert_null(r);
    free(r);
}

static void test_catalog(void **state)
{
    struct tenv *e = *state;
    struct vd_store *st = mkstore(e);
    assert_int_equal(vd_volume_create(st, "vm1", 4 * MiB, NULL), 0);
    assert_int_equal(vd_snapshot_create(st, "vm1", "s1"), 0);

    expect_rules(st, "vm1", "vm1", 0, NULL);
    assert_int_equal(vd_access_allow(st, "vm1", "unix:uid=01000", VD_ACCESS_READ_WRITE), 0);
    assert_int_equal(vd_access_allow(st, "vm1", "any", VD_ACCESS_READ_ONLY), 0);
    struct vd_access_rule two[] = { { "unix:uid=1000", VD_ACCESS_READ_WRITE },
                                    { "any", VD_ACCESS_READ_ONLY } };
    expect_rules(st, "vm1", "vm1", 2, two);
    /* Allowing again changes the rule in place. */
    assert_int_equal(vd_access_allow(st, "vm1", "unix:uid=1000", VD_ACCESS_READ_ONLY), 0);
    two[0].access = VD_ACCESS_READ_ONLY;
    expect_rules(st, "vm1", "vm1", 2, two);

    /* Errors say what is wrong and change nothing. */
    assert_int_equal(vd_access_allow(st, "vm1", "garbage", VD_ACCESS_READ_WRITE), -EINVAL);
    assert_int_equal(vd_access_allow(st, "vm1@s1", "any", VD_ACCESS_READ_WRITE), -EINVAL);
    assert_contains(vd_errmsg(), "give 'vm1'");
    assert_int_equal(vd_access_allow(st, "nosuch", "any", VD_ACCESS_READ_WRITE), -ENOENT);
    assert_contains(vd_errmsg(), "nosuch");
    assert_int_equal(vd_access_allow(st, "pool/nosuch", "any", VD_ACCESS_READ_WRITE), -ENOENT);
    assert_int_equal(vd_access_allow(st, "vm1", "any", VD_ACCESS_NONE), -EINVAL);
    assert_int_equal(vd_access_deny(st, "vm1", "unix:uid=5"), -ENOENT);
    assert_contains(vd_errmsg(), "no rule for unix:uid=5");
    assert_int_equal(vd_access_deny(st, "nosuch", "any"), -ENOENT);
    struct vd_access_rule *r;
    size_t n;
    assert_int_equal(vd_access_rules(st, "nosuch", &r, &n, NULL), -ENOENT);
    expect_rules(st, "vm1", "vm1", 2, two);

    /* Deny finds the rule however the number was spelled. */
    assert_int_equal(vd_access_deny(st, "vm1", "unix:uid=0001000"), 0);
    expect_rules(st, "vm1", "vm1", 1, two + 1);
    assert_int_equal(vd_access_deny(st, "vm1", "any"), 0);
    expect_rules(st, "vm1", "vm1", 0, NULL);

    /* Rules survive a reopen (another process sees them). */
    assert_int_equal(vd_access_allow(st, "vm1", "psk:alice", VD_ACCESS_READ_WRITE), 0);
    vd_store_close(st);
    st = mkstore(e);
    struct vd_access_rule a[] = { { "psk:alice", VD_ACCESS_READ_WRITE } };
    expect_rules(st, "vm1", "vm1", 1, a);

    /* They go with the volume: a new volume of that name is open. */
    assert_int_equal(vd_volume_remove(st, "vm1"), 0);
    assert_int_equal(vd_volume_create(st, "vm1", 4 * MiB, NULL), 0);
    expect_rules(st, "vm1", "vm1", 0, NULL);
    vd_store_close(st);
}

static void test_catalog_templates_pools(void **state)
{
    struct tenv *e = *state;
    struct vd_store *st = mkstore(e);
    assert_int_equal(vd_volume_create(st, "src", 4 * MiB, NULL), 0);
    assert_int_equal(vd_template_create(st, "gold", "src"), 0);
    assert_int_equal(vd_pool_create(st, "desk", "gold", 0, 2, 1, VD_POOL_EPHEMERAL), 0);
    /* A pool named like a volume: its own namespace, its own rules. */
    assert_int_equal(vd_pool_create(st, "src", "gold", 0, 1, 0, VD_POOL_PERSISTENT), 0);

    struct vd_access_rule g[] = { { "unix:gid=100", VD_ACCESS_READ_ONLY } };
    assert_int_equal(vd_access_allow(st, "gold", "unix:gid=100", VD_ACCESS_READ_ONLY), 0);
    expect_rules(st, "gold", "gold", 1, g);
    /* A pool without rules of its own follows its template's. */
    expect_rules(st, "pool/desk", "gold", 1, g);
    expect_rules(st, "src", "src", 0, NULL);
    /* Its own rules, once it has some, and only those. */
    struct vd_access_rule p[] = { { "any", VD_ACCESS_READ_WRITE } };
    assert_int_equal(vd_access_allow(st, "pool/desk", "any", VD_ACCESS_READ_WRITE), 0);
    expect_rules(st, "pool/desk", "pool/desk", 1, p);
    expect_rules(st, "gold", "gold", 1, g);
    /* A template's rule cannot be denied through the pool. */
    assert_int_equal(vd_access_allow(st, "pool/src", "psk:x", VD_ACCESS_READ_WRITE), 0);
    assert_int_equal(vd_access_deny(st, "pool/src", "unix:gid=100"), -ENOENT);
    expect_rules(st, "src", "src", 0, NULL);

    /* Rules go with their pool and template. */
    assert_int_equal(vd_pool_remove(st, "desk"), 0);
    assert_int_equal(vd_pool_create(st, "desk", "gold", 0, 2, 0, VD_POOL_EPHEMERAL), 0);
    expect_rules(st, "pool/desk", "gold", 1, g);
    assert_int_equal(vd_pool_remove(st, "desk"), 0);
    assert_int_equal(vd_pool_remove(st, "src"), 0);
    assert_int_equal(vd_template_remove(st, "gold"), 0);
    assert_int_equal(vd_volume_create(st, "gold", 4 * MiB, NULL), 0);
    expect_rules(st, "gold", "gold", 0, NULL);
    vd_store_close(st);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tenv_setup, tenv_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match_unix),
        cmocka_unit_test(test_match_tls),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_peer_is_user),
        T(test_catalog),
        T(test_catalog_templates_pools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
