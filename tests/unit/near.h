/* near.h: a double-precision closeness check for the unit tests. cmocka's
 * assert_float_equal casts both values and the tolerance to float, so a
 * tolerance under float's resolution (1e-9 on a double metric, 0 on a double
 * that is not a float) checks less than it says; this one does not. */
#ifndef KILN_TEST_NEAR_H
#define KILN_TEST_NEAR_H

#include <math.h>

/* Fails the test unless |a - b| <= eps, all in double; NaN never passes. */
#define assert_near(a, b, eps)                                                                     \
    do {                                                                                           \
        double near_a_ = (double)(a), near_b_ = (double)(b), near_e_ = (double)(eps);              \
        if (!(fabs(near_a_ - near_b_) <= near_e_))                                                 \
            fail_msg("%s = %.17g, expected %s = %.17g within %.3g", #a, near_a_, #b, near_b_,      \
                     near_e_);                                                                     \
    } while (0)

#endif
