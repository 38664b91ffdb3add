/* --version: see version.h. */
#include "ringroute/version.h"

#include <liburing.h>
#include <string.h>

#ifndef RR_VERSION
#define RR_VERSION "0.0.0"
#endif
#ifndef RR_GIT_COMMIT
#define RR_GIT_COMMIT "unknown"
#endif

const char *version_string(void) { return RR_VERSION; }
const char *version_commit(void) { return RR_GIT_COMMIT; }

/* The IORING_FEAT_* bits liburing 2.3 names. */
static const struct { unsigned bit; const char *name; } feats[] = {
	{IORING_FEAT_SINGLE_MMAP, "single_mmap"},   {IORING_FEAT_NODROP, "nodrop"},
	{IORING_FEAT_SUBMIT_STABLE, "submit_stable"}, {IORING_FEAT_RW_CUR_POS, "rw_cur_pos"},
	{IORING_FEAT_CUR_PERSONALITY, "cur_personality"}, {IORING_FEAT_FAST_POLL, "fast_poll"},
	{IORING_FEAT_POLL_32BITS, "poll_32bits"},   {IORING_FEAT_SQPOLL_NONFIXED, "sqpoll_nonfixed"},
	{IORING_FEAT_EXT_ARG, "ext_arg"},           {IORING_FEAT_NATIVE_WORKERS, "native_workers"},
	{IORING_FEAT_RSRC_TAGS, "rsrc_tags"},       {IORING_FEAT_CQE_SKIP, "cqe_skip"},
	{IORING_FEAT_LINKED_FILE, "linked_file"},
};

/* The operations the data path issues (shard.c, sock.c, upstream.c, xring.c). */
static const struct { int op; const char *name; } ops[] = {
	{IORING_OP_ACCEPT, "accept"},   {IORING_OP_CONNECT, "connect"},
	{IORING_OP_RECV, "recv"},       {IORING_OP_SENDMSG, "sendmsg"},
	{IORING_OP_SEND, "send"},       {IORING_OP_TIMEOUT, "timeout"},
	{IORING_OP_ASYNC_CANCEL, "async_cancel"}, {IORING_OP_MSG_RING, "msg_ring"},
	{IORING_OP_CLOSE, "close"},
};

void version_print(FILE *f)
{
	struct io_uring_params prm;
	struct io_uring ring;
	struct io_uring_probe *probe;
	int ret;

	fprintf(f, "ringroute %s (commit %s)\n", version_string(), version_commit());
	memset(&prm, 0, sizeof(prm));
	prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	ret = io_uring_queue_init_params(4, &ring, &prm);
	fprintf(f, "io_uring setup single_issuer+defer_taskrun: %s\n",
		ret == 0 ? "yes" : "no (falls back to plain rings)");
	if (ret) {
		memset(&prm, 0, sizeof(prm));
		ret = io_uring_queue_init_params(4, &ring, &prm);
	}
	if (ret) {
		fprintf(f, "io_uring: unavailable (%s)\n", strerror(-ret));
		return;
	}
	fprintf(f, "io_uring features:");
	for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
		if (prm.features & feats[i].bit)
			fprintf(f, " %s", feats[i].name);
	fputc('\n', f);
	probe = io_uring_get_probe_ring(&ring);
	fprintf(f, "io_uring operations used:");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		fprintf(f, " %s%s", ops[i].name,
			probe && io_uring_opcode_supported(probe, ops[i].op) ? "" : "(missing)");
	fputc('\n', f);
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
}
