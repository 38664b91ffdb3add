/* What --version prints: the version, the git commit the binary was built
 * from, and the io_uring features and operations this kernel offers (probed
 * on a throw-away ring), so a bug report says what the proxy ran on. */
#ifndef RINGROUTE_VERSION_H
#define RINGROUTE_VERSION_H

#include <stdio.h>

/* The version string (RR_VERSION, set by CMake from project(VERSION)). */
const char *version_string(void);
/* The git commit (RR_GIT_COMMIT, set at configure time), or "unknown". */
const char *version_commit(void);
void version_print(FILE *f);

#endif
