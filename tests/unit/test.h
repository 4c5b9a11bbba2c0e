/*
 * test.h - a tiny test framework. Each test file defines test functions and
 * calls them from main via TEST_RUN; CHECK records a failure and goes on.
 * The last line printed is "N passed, N failed" (CI reads it).
 */
#ifndef LP_TEST_H
#define LP_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks_failed;
static int test_cases_passed, test_cases_failed;

#define CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            test_checks_failed++; \
        } \
    } while (0)

#define CHECK_MSG(cond, ...) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__); \
            fputc('\n', stderr); \
            test_checks_failed++; \
        } \
    } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_NEAR(a, b, atol, rtol) \
    do { \
        double a_ = (a), b_ = (b); \
        if (!(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_))) { \
            fprintf(stderr, "  FAIL %s:%d: %s = %.9g vs %s = %.9g\n", __FILE__, __LINE__, #a, a_, #b, b_); \
            test_checks_failed++; \
        } \
    } while (0)

#define TEST_RUN(fn) \
    do { \
        int before_ = test_checks_failed; \
        fprintf(stderr, "- %s\n", #fn); \
        fn(); \
        if (test_checks_failed == before_) test_cases_passed++; \
        else test_cases_failed++; \
    } while (0)

/* Skip the current test case (e.g. ../shared absent) with a message. */
#define TEST_SKIP(...) \
    do { \
        fprintf(stderr, "  SKIP: "); \
        fprintf(stderr, __VA_ARGS__); \
        fputc('\n', stderr); \
        return; \
    } while (0)

static inline int test_report(void) {
    printf("%d passed, %d failed\n", test_cases_passed, test_cases_failed);
    return test_cases_failed ? 1 : 0;
}

#endif
