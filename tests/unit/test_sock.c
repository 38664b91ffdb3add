/* Unit tests for the socket table and SQE acquisition of src/sock.c, on a
 * fake shard (zeroed struct shard, its lists initialised) with a real
 * io_uring.
 *
 * Why: a completion names its socket by {index, generation}; a slot is
 * reused as soon as its socket is freed, often by an owner allocated at the
 * very same address, so only the generation tells a stale completion from
 * a live one. Covered: a freed-and-reused slot (same struct sock memory, or
 * another one) gets a new generation, sock_lookup of the old user_data
 * returns NULL and of the new one the socket; generation 0 is never handed
 * out, also when the 24-bit counter wraps; indexes past the table are NULL.
 * And sock_sqe must return NULL after a bounded number of submit attempts
 * instead of spinning when the ring refuses submissions: a ring created
 * with IORING_SETUP_R_DISABLED (io_uring_enter fails with EBADFD until it
 * is enabled) with its SQ filled; each refused submit is counted in
 * s->metrics.sqe_failures, and once enabled the ring hands out SQEs again.
 *
 * Includes sock.c to read SQE_SUBMIT_TRIES. Exits 77 when io_uring is
 * unavailable (ENOSYS / EPERM), or, after the other tests passed, when the
 * kernel rejects IORING_SETUP_R_DISABLED. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/sock.c"

#define SKIP 77

static unsigned freed;
static struct sock *last_freed;

static void fake_on_input(struct shard *s, struct sock *sk) { (void)s; (void)sk; fail(); }
static void fake_on_sent(struct shard *s, struct sock *sk) { (void)s; (void)sk; fail(); }
static void fake_on_error(struct shard *s, struct sock *sk, int err)
{
	(void)s;
	(void)sk;
	(void)err;
	fail();
}
static void fake_on_free(struct shard *s, struct sock *sk)
{
	(void)s;
	freed++;
	last_freed = sk;
}

static const struct sock_ops fake_ops = {
	.name = "fake",
	.buf_group = 0,
	.on_input = fake_on_input,
	.on_sent = fake_on_sent,
	.on_error = fake_on_error,
	.on_connect = NULL,
	.on_free = fake_on_free,
};

static struct shard *shard_new(unsigned entries, unsigned flags, int *err)
{
	struct shard *s = calloc(1, sizeof(*s));

	assert_non_null(s);
	list_init(&s->rearm);
	list_init(&s->dead);
	list_init(&s->flushq);
	list_init(&s->queued);
	list_init(&s->clients);
	*err = io_uring_queue_init(entries, &s->ring, flags);
	if (*err) {
		free(s);
		return NULL;
	}
	return s;
}

static void shard_free(struct shard *s)
{
	sock_table_teardown(s);
	io_uring_queue_exit(&s->ring);
	mi_free(s->socks);
	mi_free(s->free_idx);
	mi_free(s->sock_gen);
	free(s);
}

static int setup(void **state)
{
	int err;
	struct shard *s = shard_new(8, 0, &err);

	if (!s)
		fail_msg("io_uring_queue_init: %s", strerror(-err));
	freed = 0;
	last_freed = NULL;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	shard_free(*state);
	return 0;
}

/* A socket of its own (closed by sock_reap). */
static int new_fd(void)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	return sv[0];
}

/* Close sk and free its slot the way the loop does. */
static void close_and_reap(struct shard *s, struct sock *sk)
{
	unsigned before = freed;

	sock_close(s, sk);
	sock_reap(s);
	assert_int_equal(freed, before + 1);
	assert_ptr_equal(last_freed, sk);
}

static void test_generation_on_reuse(void **state)
{
	struct shard *s = *state;
	struct sock a, b, c;
	uint64_t ud_a, ud_a2, ud_b;
	uint32_t idx, gen;

	assert_int_equal(sock_register(s, &a, new_fd(), &fake_ops), 0);
	idx = a.idx;
	gen = a.gen;
	assert_int_not_equal(gen, 0);
	ud_a = sock_ud(OP_RECV, &a);
	assert_ptr_equal(sock_lookup(s, ud_a), &a);
	assert_ptr_equal(sock_lookup(s, sock_ud(OP_SEND, &a)), &a); /* any op */

	/* A second live socket gets another slot. */
	assert_int_equal(sock_register(s, &c, new_fd(), &fake_ops), 0);
	assert_int_not_equal(c.idx, idx);

	/* Freed: the old user_data names nothing. */
	close_and_reap(s, &a);
	assert_null(sock_lookup(s, ud_a));

	/* The slot is reused by an owner at the very same address: the
	 * generation alone tells the old completion from the new socket. */
	assert_int_equal(sock_register(s, &a, new_fd(), &fake_ops), 0);
	assert_int_equal(a.idx, idx);
	assert_int_not_equal(a.gen, gen);
	assert_int_not_equal(a.gen, 0);
	ud_a2 = sock_ud(OP_RECV, &a);
	assert_true(ud_a2 != ud_a);
	assert_null(sock_lookup(s, ud_a));
	assert_ptr_equal(sock_lookup(s, ud_a2), &a);
	gen = a.gen;

	/* And by another owner. */
	close_and_reap(s, &a);
	assert_int_equal(sock_register(s, &b, new_fd(), &fake_ops), 0);
	assert_int_equal(b.idx, idx);
	assert_int_not_equal(b.gen, gen);
	ud_b = sock_ud(OP_RECV, &b);
	assert_null(sock_lookup(s, ud_a));
	assert_null(sock_lookup(s, ud_a2));
	assert_ptr_equal(sock_lookup(s, ud_b), &b);
	assert_ptr_equal(sock_lookup(s, sock_ud(OP_RECV, &c)), &c);

	/* Past the table, or a zeroed user_data: nothing. */
	assert_null(sock_lookup(s, sock_ud_raw(OP_RECV, s->nsocks)));
	assert_null(sock_lookup(s, sock_ud_raw(OP_RECV, 0xfffffff0u)));
	assert_null(sock_lookup(s, sock_ud_raw(OP_RECV, b.idx))); /* generation 0 */

	close_and_reap(s, &b);
	close_and_reap(s, &c);
}

static void test_generation_never_zero(void **state)
{
	struct shard *s = *state;
	struct sock a;
	uint32_t idx;
	uint64_t ud_old;

	assert_int_equal(sock_register(s, &a, new_fd(), &fake_ops), 0);
	idx = a.idx;
	close_and_reap(s, &a);

	/* The slot's counter is at its 24-bit maximum: the next one wraps,
	 * and skips 0 (a zeroed struct sock or user_data must never match). */
	s->sock_gen[idx] = 0xffffff;
	assert_int_equal(sock_register(s, &a, new_fd(), &fake_ops), 0);
	assert_int_equal(a.idx, idx);
	assert_int_equal(a.gen, 1);
	ud_old = sock_ud_raw(OP_RECV, idx) | ((uint64_t)0xffffff << 8);
	assert_null(sock_lookup(s, ud_old));
	assert_null(sock_lookup(s, sock_ud_raw(OP_RECV, idx)));
	assert_ptr_equal(sock_lookup(s, sock_ud(OP_RECV, &a)), &a);
	close_and_reap(s, &a);

	/* Many reuses of one slot: never 0, always different from the last. */
	for (uint32_t i = 0, prev = 1; i < 3000; i++) {
		assert_int_equal(sock_register(s, &a, new_fd(), &fake_ops), 0);
		assert_int_equal(a.idx, idx);
		assert_int_not_equal(a.gen, 0);
		assert_int_not_equal(a.gen, prev);
		prev = a.gen;
		close_and_reap(s, &a);
	}
}

static void on_alarm(int sig)
{
	static const char msg[] = "sock_sqe did not return: it spins on a refusing ring\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static void test_sqe_refused(void **state)
{
	struct shard *s;
	struct io_uring_sqe *sqe;
	unsigned filled = 0;
	int err;

	(void)state;
	s = shard_new(4, IORING_SETUP_R_DISABLED, &err);
	assert_non_null(s);
	/* Fill the SQ: the ring is disabled, so nothing leaves it. */
	while ((sqe = io_uring_get_sqe(&s->ring))) {
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_NONE, SOCK_UD_NONE));
		filled++;
	}
	assert_true(filled >= 4);
	assert_int_equal(io_uring_submit(&s->ring), -EBADFD); /* the premise */

	signal(SIGALRM, on_alarm);
	alarm(10);
	assert_null(sock_sqe(s));
	assert_null(sock_sqe(s));
	alarm(0);
	/* Bounded: each call tried SQE_SUBMIT_TRIES submits, each counted. */
	assert_int_equal(counter_get(&s->metrics.sqe_failures), 2 * SQE_SUBMIT_TRIES);

	/* The ring takes submissions again: so does sock_sqe. */
	/* (liburing 2.3 declares io_uring_enable_rings but does not export it.) */
	assert_int_equal(syscall(__NR_io_uring_register, s->ring.ring_fd,
				 IORING_REGISTER_ENABLE_RINGS, NULL, 0), 0);
	sqe = sock_sqe(s);
	assert_non_null(sqe);
	assert_int_equal(counter_get(&s->metrics.sqe_failures), 2 * SQE_SUBMIT_TRIES);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, sock_ud_raw(OP_NONE, SOCK_UD_NONE));
	assert_true(io_uring_submit(&s->ring) >= 1);
	shard_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_generation_on_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_generation_never_zero, setup, teardown),
	};
	const struct CMUnitTest sqe_tests[] = {
		cmocka_unit_test(test_sqe_refused),
	};
	struct io_uring ring;
	int ret, rc;

	ret = io_uring_queue_init(4, &ring, 0);
	if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES) {
		printf("SKIP: io_uring unavailable (%s)\n", strerror(-ret));
		return SKIP;
	}
	if (ret) {
		printf("io_uring_queue_init: %s\n", strerror(-ret));
		return 1;
	}
	io_uring_queue_exit(&ring);
	rc = cmocka_run_group_tests_name("sock_table", tests, NULL, NULL);
	if (rc)
		return rc;
	ret = io_uring_queue_init(4, &ring, IORING_SETUP_R_DISABLED);
	if (ret) {
		printf("SKIP: kernel rejects IORING_SETUP_R_DISABLED (%s)\n", strerror(-ret));
		return SKIP;
	}
	io_uring_queue_exit(&ring);
	return cmocka_run_group_tests_name("sock_sqe", sqe_tests, NULL, NULL);
}
