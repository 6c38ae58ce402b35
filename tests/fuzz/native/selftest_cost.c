/* The cost bound of fuzz_common.h, checked both ways (test_native_fuzz.py): an input that is costly every time it
 * runs is a finding; a cheap input caught in a slow spell (costly on ATTEMPTS runs in a row, then cheap) is not.
 * Usage: selftest_cost costly|spell. Not a fuzzer: main() feeds timed() chosen inputs in a chosen order. */
#include "fuzz_common.h"

static int spell; /* runs of the spell input still to be slow */

static void spin(long ns) {
    long started = thread_ns();
    while (thread_ns() - started < ns) {
    }
}

static void call(const uint8_t *data, size_t size) {
    (void)size;
    if (data[0] == 1) spin(10 * BUDGET_NS); /* issue 13's hostile RTCP: half a millisecond a packet */
    if (data[0] == 2 && spell > 0) spell--, spin(4 * BUDGET_NS);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    setup();
    const uint8_t cheap[1] = {0}, costly[1] = {1}, caught[1] = {2};
    for (int i = 0; i < WARMUP_INPUTS + 10; i++) timed(call, cheap, 1, 0, "cheap");
    if (!strcmp(argv[1], "costly")) {
        timed(call, costly, 1, 0, "costly");
    } else if (!strcmp(argv[1], "spell")) {
        spell = ATTEMPTS;
        timed(call, caught, 1, 0, "spell");
    } else {
        return 2;
    }
    for (int i = 0; i < RECHECK_AFTER + 10; i++) timed(call, cheap, 1, 0, "cheap");
    printf("no finding after %ld inputs\n", inputs);
    return 0;
}
