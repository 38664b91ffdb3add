/* Unit tests for the provided buffer rings (src/bufring.c): registration of
 * both groups (0: client sockets, ids 0..n-1; 1: upstream sockets, ids
 * n..2n-1), a real recv with IOSQE_BUFFER_SELECT picking a buffer from the
 * right group, reference counting, and a buffer going back to its own ring
 * only on the last unref - checked both by in_kernel and by what the kernel
 * can still hand out - and a saturated reference count (UINT16_MAX) that
 * refuses one more reference (-EOVERFLOW) instead of wrapping.
 *
 * Needs a real io_uring with provided buffer rings (Linux 5.19+). Where the
 * machine lacks it (ENOSYS / EPERM from io_uring_setup, or no buffer rings)
 * the program prints why and exits 77: skipped, never passed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "ringroute/bufring.h"

#define SKIP 77

struct fixture {
	struct io_uring ring;
	struct bufring br;
	int sv[2];
};

static int setup_n(void **state, uint32_t nbufs, uint32_t bufsz)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(io_uring_queue_init(16, &f->ring, 0), 0);
	assert_int_equal(bufring_init(&f->br, &f->ring, nbufs, bufsz), 0);
	/* Datagrams: each send is one recv, so tests control which recv gets
	 * which bytes. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, f->sv), 0);
	*state = f;
	return 0;
}

static int setup8(void **state) { return setup_n(state, 8, 256); }
static int setup4(void **state) { return setup_n(state, 4, 64); }

static int teardown(void **state)
{
	struct fixture *f = *state;
	close(f->sv[0]);
	close(f->sv[1]);
	bufring_destroy(&f->br, &f->ring);
	assert_null(f->br.base);
	assert_null(f->br.br[0]);
	assert_null(f->br.br[1]);
	bufring_destroy(&f->br, &f->ring); /* twice: harmless */
	io_uring_queue_exit(&f->ring);
	free(f);
	return 0;
}

/* Send msg (if any) to sv[1], then recv on sv[0] with a buffer the kernel
 * picks from group. Returns cqe->res; *bid gets the buffer id, or -1. */
static int recv_select(struct fixture *f, unsigned group, const char *msg, int *bid)
{
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int res;

	if (msg)
		assert_int_equal(send(f->sv[1], msg, strlen(msg), 0), (ssize_t)strlen(msg));
	sqe = io_uring_get_sqe(&f->ring);
	assert_non_null(sqe);
	io_uring_prep_recv(sqe, f->sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)group;
	io_uring_sqe_set_data64(sqe, 0x1234);
	assert_int_equal(io_uring_submit_and_wait(&f->ring, 1), 1);
	assert_int_equal(io_uring_peek_cqe(&f->ring, &cqe), 0);
	assert_int_equal(io_uring_cqe_get_data64(cqe), 0x1234);
	res = cqe->res;
	*bid = -1;
	if (cqe->flags & IORING_CQE_F_BUFFER)
		*bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	else
		assert_true(res < 0);
	io_uring_cqe_seen(&f->ring, cqe);
	return res;
}

/* A recv of the datagram already queued, which must get a buffer of group
 * and hold msg: checks the bytes and takes the buffer. */
static int take_pending(struct fixture *f, unsigned group, const char *msg)
{
	int bid;
	int res = recv_select(f, group, NULL, &bid);
	if (res < 0)
		fail_msg("recv (group %u): %s", group, strerror(-res));
	assert_int_equal(res, (int)strlen(msg));
	assert_true(bid >= 0 && (uint32_t)bid < BUFRING_GROUPS * f->br.nbufs);
	assert_int_equal(bufring_group(&f->br, (uint32_t)bid), group);
	assert_int_equal(f->br.refs[bid], 0); /* it was the kernel's */
	assert_memory_equal(bufring_ptr(&f->br, (uint32_t)bid), msg, strlen(msg));
	bufring_taken(&f->br, (uint32_t)bid);
	assert_int_equal(f->br.refs[bid], 1);
	return bid;
}

/* Send msg, then take_pending. */
static int take_one(struct fixture *f, unsigned group, const char *msg)
{
	assert_int_equal(send(f->sv[1], msg, strlen(msg), 0), (ssize_t)strlen(msg));
	return take_pending(f, group, msg);
}

static void test_init_bad_args(void **state)
{
	struct io_uring ring;
	struct bufring a, b;
	(void)state;
	assert_int_equal(io_uring_queue_init(4, &ring, 0), 0);
	assert_int_equal(bufring_init(&b, &ring, 0, 64), -EINVAL);
	assert_int_equal(bufring_init(&b, &ring, 3, 64), -EINVAL);
	assert_int_equal(bufring_init(&b, &ring, 32768, 64), -EINVAL);
	assert_null(b.base);
	assert_null(b.refs);
	/* The largest allowed size registers. */
	assert_int_equal(bufring_init(&a, &ring, 16384, 16), 0);
	assert_int_equal(a.in_kernel[0], 16384);
	assert_int_equal(a.in_kernel[1], 16384);
	bufring_destroy(&a, &ring);
	/* Groups already registered on this ring: refused, nothing kept. */
	assert_int_equal(bufring_init(&a, &ring, 2, 64), 0);
	assert_true(bufring_init(&b, &ring, 2, 64) < 0);
	assert_null(b.br[0]);
	assert_null(b.br[1]);
	assert_null(b.base);
	assert_null(b.refs);
	/* Destroy unregisters both groups: the ids can be used again. */
	bufring_destroy(&a, &ring);
	assert_int_equal(bufring_init(&a, &ring, 2, 64), 0);
	bufring_destroy(&a, &ring);
	io_uring_queue_exit(&ring);
}

static void test_init_registers(void **state)
{
	struct fixture *f = *state;
	assert_non_null(f->br.br[0]);
	assert_non_null(f->br.br[1]);
	assert_non_null(f->br.base);
	assert_non_null(f->br.refs);
	assert_int_equal(f->br.nbufs, 8);
	assert_int_equal(f->br.bufsz, 256);
	assert_int_equal(f->br.in_kernel[0], 8);
	assert_int_equal(f->br.in_kernel[1], 8);
	for (uint32_t i = 0; i < 2 * 8; i++) {
		assert_int_equal(f->br.refs[i], 0);
		assert_int_equal(bufring_group(&f->br, i), i >= 8);
	}
	assert_ptr_equal(bufring_ptr(&f->br, 3), f->br.base + 3 * 256);
	assert_ptr_equal(bufring_ptr(&f->br, 11), f->br.base + 11 * 256);
}

static void test_recv_and_refs(void **state)
{
	struct fixture *f = *state;
	for (unsigned g = 0; g < BUFRING_GROUPS; g++) {
		int bid = take_one(f, g, g ? "from the replica" : "hello, ring");

		assert_int_equal(f->br.in_kernel[g], 7);
		assert_int_equal(f->br.in_kernel[!g], 8);
		bufring_ref(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.refs[bid], 2);
		bufring_ref(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.refs[bid], 3);
		bufring_unref(&f->br, (uint32_t)bid);
		bufring_unref(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.refs[bid], 1);
		assert_int_equal(f->br.in_kernel[g], 7); /* still ours */
		bufring_unref(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.refs[bid], 0);
		assert_int_equal(f->br.in_kernel[g], 8);
		assert_int_equal(f->br.in_kernel[!g], 8);
	}
}

/* Only the last unref gives the buffer back: with every buffer of a group
 * held, the kernel has none to pick there until a count reaches zero. The
 * other group is unaffected. */
static void test_exhaust_and_return(void **state)
{
	struct fixture *f = *state;
	for (unsigned g = 0; g < BUFRING_GROUPS; g++) {
		int bids[4], seen = 0, bid, res, other;

		for (int i = 0; i < 4; i++) {
			char msg[16];
			snprintf(msg, sizeof(msg), "msg-%d", i);
			bids[i] = take_one(f, g, msg);
			assert_false(seen & (1 << bids[i])); /* distinct buffers */
			seen |= 1 << bids[i];
		}
		assert_int_equal(f->br.in_kernel[g], 0);
		res = recv_select(f, g, "no room", &bid);
		assert_int_equal(res, -ENOBUFS);

		/* The other group still receives ("no room" is still queued). */
		other = take_pending(f, !g, "no room");
		bufring_unref(&f->br, (uint32_t)other);
		assert_int_equal(f->br.in_kernel[!g], 4);

		/* bids[2] shared by two holders: one unref is not enough. */
		res = recv_select(f, g, "still no room", &bid);
		assert_int_equal(res, -ENOBUFS);
		bufring_ref(&f->br, (uint32_t)bids[2]);
		bufring_unref(&f->br, (uint32_t)bids[2]);
		assert_int_equal(f->br.in_kernel[g], 0);
		res = recv_select(f, g, NULL, &bid);
		assert_int_equal(res, -ENOBUFS);

		/* Last reference: the kernel may use it again, and only it. */
		bufring_unref(&f->br, (uint32_t)bids[2]);
		assert_int_equal(f->br.in_kernel[g], 1);
		res = recv_select(f, g, NULL, &bid);
		assert_int_equal(res, 13);
		assert_int_equal(bid, bids[2]);
		assert_memory_equal(bufring_ptr(&f->br, (uint32_t)bid), "still no room", 13);
		bufring_taken(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.in_kernel[g], 0);

		for (int i = 0; i < 4; i++)
			bufring_unref(&f->br, (uint32_t)bids[i]);
		assert_int_equal(f->br.in_kernel[g], 4);
	}
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(f->br.refs[i], 0);
}

/* Many rounds, so each ring's tail wraps many times, holding buffers in an
 * order that differs from the kernel's: every buffer keeps coming back to
 * its own group. */
static void test_wraparound(void **state)
{
	struct fixture *f = *state;
	int held[2][4];
	unsigned counts[8] = {0};

	memset(held, -1, sizeof(held));
	for (int round = 0; round < 800; round++) {
		unsigned g = (unsigned)(round / 3) % 2;
		char msg[32];
		int slot = (round * 3) % 4, bid;
		if (held[g][slot] >= 0) {
			bufring_unref(&f->br, (uint32_t)held[g][slot]);
			held[g][slot] = -1;
		}
		snprintf(msg, sizeof(msg), "round %d", round);
		bid = take_one(f, g, msg);
		if (round % 5 == 0) {
			bufring_ref(&f->br, (uint32_t)bid);
			bufring_unref(&f->br, (uint32_t)bid);
		}
		held[g][slot] = bid;
		counts[bid]++;
		for (unsigned k = 0; k < 2; k++) {
			uint32_t ours = 0;
			for (int i = 0; i < 4; i++)
				ours += held[k][i] >= 0;
			assert_int_equal(f->br.in_kernel[k], 4 - ours);
		}
	}
	for (int i = 0; i < 8; i++)
		assert_true(counts[i] > 0);
	for (unsigned k = 0; k < 2; k++)
		for (int i = 0; i < 4; i++)
			if (held[k][i] >= 0)
				bufring_unref(&f->br, (uint32_t)held[k][i]);
	assert_int_equal(f->br.in_kernel[0], 4);
	assert_int_equal(f->br.in_kernel[1], 4);
}

static void test_many_refs(void **state)
{
	struct fixture *f = *state;
	int bid = take_one(f, 1, "x");
	for (int i = 0; i < 1000; i++)
		bufring_ref(&f->br, (uint32_t)bid);
	for (int i = 0; i < 1000; i++) {
		bufring_unref(&f->br, (uint32_t)bid);
		assert_int_equal(f->br.in_kernel[1], 3);
	}
	assert_int_equal(f->br.refs[bid], 1);
	bufring_unref(&f->br, (uint32_t)bid);
	assert_int_equal(f->br.in_kernel[1], 4);
	assert_int_equal(f->br.in_kernel[0], 4);
}

/* A buffer referenced by UINT16_MAX holders cannot count one more:
 * bufring_ref must refuse (-EOVERFLOW, so the caller copies the bytes)
 * and leave the count as it is, never wrap it to 0 (which would hand the
 * buffer back to the kernel while 65535 holders still point into it). */
static void test_ref_saturates(void **state)
{
	struct fixture *f = *state;
	int bid = take_one(f, 0, "saturate me");
	uint32_t n = 1;

	while (bufring_ref(&f->br, (uint32_t)bid) == 0) {
		n++;
		assert_true(n <= UINT16_MAX);
	}
	assert_int_equal(n, UINT16_MAX);
	assert_int_equal(f->br.refs[bid], UINT16_MAX);
	assert_int_equal(bufring_ref(&f->br, (uint32_t)bid), -EOVERFLOW);
	assert_int_equal(bufring_ref(&f->br, (uint32_t)bid), -EOVERFLOW);
	assert_int_equal(f->br.refs[bid], UINT16_MAX);
	assert_int_equal(f->br.in_kernel[0], 3);

	/* One unref makes room again. */
	bufring_unref(&f->br, (uint32_t)bid);
	assert_int_equal(f->br.refs[bid], UINT16_MAX - 1);
	assert_int_equal(bufring_ref(&f->br, (uint32_t)bid), 0);
	assert_int_equal(f->br.refs[bid], UINT16_MAX);
	assert_int_equal(bufring_ref(&f->br, (uint32_t)bid), -EOVERFLOW);

	/* Every holder lets go: back to the kernel on the last one only. */
	for (uint32_t i = 0; i < UINT16_MAX - 1; i++)
		bufring_unref(&f->br, (uint32_t)bid);
	assert_int_equal(f->br.refs[bid], 1);
	assert_int_equal(f->br.in_kernel[0], 3);
	bufring_unref(&f->br, (uint32_t)bid);
	assert_int_equal(f->br.refs[bid], 0);
	assert_int_equal(f->br.in_kernel[0], 4);
	assert_int_equal(f->br.in_kernel[1], 4);
}

/* Exit 77 when this machine cannot run the tests at all. */
static void probe_or_skip(void)
{
	struct io_uring ring;
	struct bufring b;
	int ret = io_uring_queue_init(4, &ring, 0);

	if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES) {
		printf("SKIP: io_uring unavailable (%s)\n", strerror(-ret));
		exit(SKIP);
	}
	if (ret) {
		printf("io_uring_queue_init: %s\n", strerror(-ret));
		exit(1);
	}
	ret = bufring_init(&b, &ring, 2, 64);
	if (ret == -EINVAL || ret == -ENOENT) {
		printf("SKIP: kernel lacks provided buffer rings (%s)\n", strerror(-ret));
		io_uring_queue_exit(&ring);
		exit(SKIP);
	}
	if (ret) {
		printf("bufring_init: %s\n", strerror(-ret));
		exit(1);
	}
	bufring_destroy(&b, &ring);
	io_uring_queue_exit(&ring);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_bad_args),
		cmocka_unit_test_setup_teardown(test_init_registers, setup8, teardown),
		cmocka_unit_test_setup_teardown(test_recv_and_refs, setup8, teardown),
		cmocka_unit_test_setup_teardown(test_exhaust_and_return, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_wraparound, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_many_refs, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_ref_saturates, setup4, teardown),
	};
	probe_or_skip();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
