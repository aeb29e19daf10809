/* An rtld-audit library (glibc LD_AUDIT) that makes the dynamic loader skip every search for the
 * OpenCL loader and the HIP runtime, as on a machine where they are not installed: dlopen of
 * libOpenCL.so.1 or libamdhip64.so fails, whatever the name or path. Used by
 * tests/test_no_gpu_libraries.py; it needs no privileges, unlike a mount namespace. */
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
#include <string.h>

unsigned int la_version(unsigned int version) { return version < LAV_CURRENT ? version : LAV_CURRENT; }

char *la_objsearch(const char *name, uintptr_t *cookie, unsigned int flag) {
    (void)cookie;
    (void)flag;
    return (strstr(name, "libOpenCL") || strstr(name, "libamdhip64")) ? NULL : (char *)name;
}
