/* watch: --watch-config. A thread waits on inotify for the directory that
 * holds the --config file and, when the file's content differs from what
 * it saw last, sends the process SIGHUP: a change on disk takes exactly
 * the path of an operator's reload (main's signal loop), so there is one
 * reload and it logs, notifies systemd and refuses a bad file the same way.
 *
 * The directory is watched, not the file: Kubernetes updates a mounted
 * ConfigMap by writing a new directory and renaming a symlink (..data)
 * over the old one, and editors write a new file and rename it over the
 * old; neither writes to the file the path named. The content is compared
 * (XXH64), so events that change nothing (another file of the directory)
 * do not reload. */
#ifndef RINGROUTE_WATCH_H
#define RINGROUTE_WATCH_H

struct config_watch;

/* Starts watching path (its content now is the baseline). Returns 0 and
 * *out, or -errno with a message logged. */
int config_watch_start(const char *path, struct config_watch **out);
/* Stops the thread and frees w. NULL is a no-op. */
void config_watch_stop(struct config_watch *w);

#endif
