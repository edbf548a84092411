# paused_broker.sh: sourced by the tests that pause this stack's Kafka broker
# with SIGSTOP while a service works (tests/scripts/it-*-paused-broker.sh).
# Only the broker of $KILN_STACK_DIR is ever paused: its pid file must name a
# live Kafka process, else the test skips (exit 77) having started and
# written nothing (tests/scripts/stack-skip-clean.sh checks that).
# Sets kpid (the broker's process) and paused; defines:
#   broker_pause / broker_resume   SIGSTOP / SIGCONT, keeping `paused` right
#   broker_resume_if_paused        for the exit trap: never leave it stopped
#   need_fashion_mnist             skip (77) without the dataset package
stackdir=${KILN_STACK_DIR:-$src/.stack}
pidfile=$stackdir/kafka.pid
[ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null ||
    { echo "SKIPPED: no Kafka of this stack to pause ($pidfile)"; exit 77; }
kpid=$(cat "$pidfile")
grep -q kafka.Kafka "/proc/$kpid/cmdline" 2>/dev/null ||
    { echo "SKIPPED: $pidfile does not name a Kafka broker"; exit 77; }
paused=0

broker_pause() { kill -STOP "$kpid"; paused=1; }
broker_resume() { kill -CONT "$kpid"; paused=0; }
broker_resume_if_paused() { ((paused)) && kill -CONT "$kpid" 2>/dev/null || true; }

need_fashion_mnist() {
    [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
        { echo "SKIPPED: /usr/share/datasets/fashion-mnist not installed"; exit 77; }
}
