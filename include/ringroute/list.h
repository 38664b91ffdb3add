/* Intrusive doubly linked lists (h2o linklist / HAProxy LIST style).
 * A node that is not on a list points to itself, so "is it linked?" is a
 * pointer compare and unlinking twice is harmless. */
#ifndef RINGROUTE_LIST_H
#define RINGROUTE_LIST_H

#include <assert.h>
#include <stddef.h>

struct list {
	struct list *next, *prev;
};

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

static inline void list_init(struct list *l) { l->next = l->prev = l; }
static inline int list_empty(const struct list *l) { return l->next == l; }
static inline int list_linked(const struct list *n) { return n->next != n; }

/* Insert n before pos (at the tail when pos is the head). n must be unlinked. */
static inline void list_insert_before(struct list *pos, struct list *n)
{
	assert(!list_linked(n));
	n->prev = pos->prev;
	n->next = pos;
	pos->prev->next = n;
	pos->prev = n;
}

static inline void list_push_back(struct list *head, struct list *n) { list_insert_before(head, n); }
static inline void list_push_front(struct list *head, struct list *n) { list_insert_before(head->next, n); }

/* Unlink n and re-initialise it, so it may be unlinked or inserted again. */
static inline void list_del_init(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

static inline struct list *list_pop_front(struct list *head)
{
	struct list *n = head->next;
	if (n == head)
		return NULL;
	list_del_init(n);
	return n;
}

#define list_for_each_safe(pos, tmp, head) \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
