/* The C++ QA programs' check: a failed condition is printed with its file and line and
 * counted; each program returns qa_result() (0 when nothing failed), which ctest reads. */
#ifndef INCLUDED_RFDETECT_QA_CHECK_H
#define INCLUDED_RFDETECT_QA_CHECK_H

#include <cstdio>

static int failures = 0;
#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            std::fprintf(stderr, "%s:%d: FAILED %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                            \
        }                                                                          \
    } while (0)

static inline int qa_result(const char* name)
{
    if (failures)
        std::fprintf(stderr, "%s: %d failures\n", name, failures);
    else
        std::printf("%s: ok\n", name);
    return failures ? 1 : 0;
}

#endif
