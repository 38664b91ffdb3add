/* Passive outlier ejection (see outlier.h). Every transition is one CAS or
 * a store by the shard that saw the outcome; racing shards may both count a
 * failure or both see a return, which only makes an ejection a request
 * earlier or later: no lock is worth that on the request path. */
#include "ringroute/outlier.h"

#include <string.h>

#include "ringroute/clock.h"
#include "ringroute/config.h"
#include "ringroute/log.h"

static const char *const reason_names[OUTLIER_REASONS] = {
	[OUTLIER_CONNECT_FAILED] = "connect_failed",
	[OUTLIER_RESET] = "reset",
	[OUTLIER_TIMEOUT] = "timeout",
	[OUTLIER_BAD_RESPONSE] = "bad_response",
	[OUTLIER_5XX] = "5xx",
};

const char *outlier_reason_name(enum outlier_reason r)
{
	return (unsigned)r < OUTLIER_REASONS ? reason_names[r] : "unknown";
}

/* The replica's "backend/id" for the log: its registry key up to '@'. */
static int key_name_len(const struct replica_state *rs)
{
	const char *at = strchr(rs->key, '@');

	return at ? (int)(at - rs->key) : (int)strlen(rs->key);
}

uint64_t outlier_ejection_ms(const struct outlier_cfg *c, uint32_t level)
{
	uint64_t ms = (uint64_t)c->base_ejection_ms * (level ? level : 1);

	return ms < c->max_ejection_ms ? ms : c->max_ejection_ms;
}

bool outlier_percent_allows(const struct outlier_cfg *c, size_t ejected, size_t n)
{
	return (uint64_t)(ejected + 1) * 100 <= (uint64_t)c->max_ejection_percent * n;
}

/* Replicas of b ejected at now_ms (expired ejections not counted). */
static size_t count_ejected(const struct backend_cfg *b, uint64_t now_ms)
{
	size_t n = 0;

	for (size_t i = 0; i < b->nreplicas; i++)
		if (outlier_ms_left(b->replicas[i].state, now_ms))
			n++;
	return n;
}

/* Ejects replica ridx of b, unless that would exceed max_ejection_percent
 * or another shard ejected it first. The percent is checked before and,
 * since two shards may each eject a different replica at once, again
 * after: the later one that finds the limit exceeded steps back (both may,
 * which ejects one fewer for a moment, never one more). */
static bool eject(const struct backend_cfg *b, size_t ridx, enum outlier_reason why,
		  uint64_t now_ms)
{
	struct replica_state *rs = b->replicas[ridx].state;
	const struct outlier_cfg *c = &b->outlier;
	uint32_t level = atomic_load_explicit(&rs->outlier.level, memory_order_relaxed) + 1;
	uint64_t ms = outlier_ejection_ms(c, level), until = now_ms + ms, zero = 0;
	uint32_t failures = atomic_load_explicit(&rs->outlier.consecutive, memory_order_relaxed);

	if (!outlier_percent_allows(c, count_ejected(b, now_ms), b->nreplicas))
		return false;
	if (!atomic_compare_exchange_strong(&rs->ejected_until_ms, &zero, until))
		return false;
	if (count_ejected(b, now_ms) * 100 > (uint64_t)c->max_ejection_percent * b->nreplicas) {
		atomic_compare_exchange_strong(&rs->ejected_until_ms, &until, 0);
		return false;
	}
	atomic_store_explicit(&rs->outlier.level, level, memory_order_relaxed);
	atomic_store_explicit(&rs->outlier.probation, 0, memory_order_relaxed);
	atomic_store_explicit(&rs->outlier.consecutive, 0, memory_order_relaxed);
	atomic_store_explicit(&rs->outlier.last_reason, (uint32_t)why, memory_order_relaxed);
	atomic_fetch_add_explicit(&rs->outlier.ejections[why], 1, memory_order_relaxed);
	log_warn("replica %.*s ejected for %llu ms after %u consecutive failures (%s)",
		 key_name_len(rs), rs->key, (unsigned long long)ms, failures ? failures : 1,
		 outlier_reason_name(why));
	return true;
}

/* See outlier.h. Failures of requests that were in flight when the replica
 * was ejected are not counted: they say nothing new. */
bool outlier_failure(const struct backend_cfg *b, size_t ridx, enum outlier_reason why,
		     uint64_t now_ms)
{
	struct replica_state *rs = b->replicas[ridx].state;
	uint32_t n;

	if (!b->outlier.consecutive_failures ||
	    atomic_load_explicit(&rs->ejected_until_ms, memory_order_relaxed))
		return false;
	if (atomic_load_explicit(&rs->outlier.probation, memory_order_relaxed)) {
		atomic_store_explicit(&rs->outlier.consecutive, 1, memory_order_relaxed);
		return eject(b, ridx, why, now_ms);
	}
	n = atomic_fetch_add_explicit(&rs->outlier.consecutive, 1, memory_order_relaxed) + 1;
	if (n < b->outlier.consecutive_failures)
		return false;
	return eject(b, ridx, why, now_ms);
}

/* See outlier.h. In service, a success only clears the failure run, and
 * writes only when there is one (the counter's line stays shared). On
 * probation, consecutive counts successes until the run is long enough. */
void outlier_success(const struct backend_cfg *b, size_t ridx)
{
	struct replica_state *rs = b->replicas[ridx].state;
	uint32_t n;

	if (!atomic_load_explicit(&rs->outlier.probation, memory_order_relaxed)) {
		if (atomic_load_explicit(&rs->outlier.consecutive, memory_order_relaxed))
			atomic_store_explicit(&rs->outlier.consecutive, 0, memory_order_relaxed);
		return;
	}
	n = atomic_fetch_add_explicit(&rs->outlier.consecutive, 1, memory_order_relaxed) + 1;
	if (n < (b->outlier.consecutive_failures ? b->outlier.consecutive_failures : 1))
		return;
	atomic_store_explicit(&rs->outlier.probation, 0, memory_order_relaxed);
	atomic_store_explicit(&rs->outlier.level, 0, memory_order_relaxed);
	atomic_store_explicit(&rs->outlier.consecutive, 0, memory_order_relaxed);
	log_info("replica %.*s passed probation: ejection time back to its base",
		 key_name_len(rs), rs->key);
}

/* See outlier.h. The CAS elects one caller to put the replica on probation
 * and log its return. */
bool outlier_check_return(struct replica_state *rs, uint64_t until)
{
	if (clock_now_ms() < until)
		return true;
	if (atomic_compare_exchange_strong(&rs->ejected_until_ms, &until, 0)) {
		atomic_store_explicit(&rs->outlier.consecutive, 0, memory_order_relaxed);
		atomic_store_explicit(&rs->outlier.probation, 1, memory_order_relaxed);
		atomic_store_explicit(&rs->up_since_ms, until, memory_order_relaxed); /* slow start */
		log_info("replica %.*s returns from ejection, on probation", key_name_len(rs),
			 rs->key);
	}
	return false;
}

uint64_t outlier_ms_left(const struct replica_state *rs, uint64_t now_ms)
{
	uint64_t until = atomic_load_explicit(&rs->ejected_until_ms, memory_order_relaxed);

	return until > now_ms ? until - now_ms : 0;
}

uint64_t outlier_ejections(const struct replica_state *rs)
{
	uint64_t n = 0;

	for (int r = 0; r < OUTLIER_REASONS; r++)
		n += atomic_load_explicit(&rs->outlier.ejections[r], memory_order_relaxed);
	return n;
}
