/*
 * kafka_mock - a Kafka cluster on loopback for the tests (never installed)
 *
 *   kafka_mock [-b BROKERS] [-t TOPIC[:PARTITIONS]]...
 *
 * Starts librdkafka's mock cluster (rd_kafka_mock_cluster_new: the real
 * Kafka protocol, producer with idempotence, consumer groups, on
 * 127.0.0.1 ports of the kernel's choosing), creates the topics named
 * with -t (PARTITIONS, default 3; replication factor 1), prints the
 * bootstrap list ("127.0.0.1:PORT,...") as one line on stdout and waits
 * for a signal:
 *
 *   SIGTERM, SIGINT, SIGHUP   stop (the cluster and its data are gone)
 *   SIGUSR1                   every broker down: connections are closed
 *                             and new ones refused, the data stays
 *   SIGUSR2                   every broker up again
 *
 * Each change is confirmed with one line on stdout ("down", "up"), so a
 * test knows it has happened. The signals are taken with sigwait, blocked
 * in every thread (librdkafka's inherit the mask): no handler, no polling.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define KAFKA_MOCK_PARTITIONS 3

/* kafka_mock_usage - complain and exit */
static void kafka_mock_usage(const char *why)
{
    fprintf(stderr,
            "kafka_mock: %s\n"
            "usage: kafka_mock [-b BROKERS] [-t TOPIC[:PARTITIONS]]...\n",
            why);
    exit(2);
}

/* kafka_mock_number - a positive int from text, or exit */
static int kafka_mock_number(const char *text, const char *what)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != 0 || value < 1 || value > 1000) {
        fprintf(stderr, "kafka_mock: bad %s: \"%s\"\n", what, text);
        exit(2);
    }
    return (int) value;
}

/* kafka_mock_topic - create TOPIC[:PARTITIONS] on the cluster */
static void kafka_mock_topic(rd_kafka_mock_cluster_t *cluster, char *spec)
{
    char *colon = strrchr(spec, ':');
    int partitions = KAFKA_MOCK_PARTITIONS;
    rd_kafka_resp_err_t err;

    if (colon != NULL) {
        *colon = 0;
        partitions = kafka_mock_number(colon + 1, "partition count");
    }
    if (*spec == 0)
        kafka_mock_usage("empty topic name");
    if ((err = rd_kafka_mock_topic_create(cluster, spec, partitions, 1)) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafka_mock: create topic %s: %s\n", spec,
                rd_kafka_err2str(err));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *cluster;
    sigset_t sigs;
    int brokers = 1;
    int sig;

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGUSR2);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0) {
        perror("kafka_mock: sigprocmask");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-b") == 0 && i + 1 < argc)
            brokers = kafka_mock_number(argv[++i], "broker count");
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            i++; /* after the cluster exists */
        else
            kafka_mock_usage("bad arguments");
    }

    /* The handle the cluster lives in: nothing is produced through it. */
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "client.id", "sluice-kafka-mock", errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_mock: %s\n", errstr);
        return 1;
    }
    if ((rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) ==
        NULL) {
        fprintf(stderr, "kafka_mock: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    if ((cluster = rd_kafka_mock_cluster_new(rk, brokers)) == NULL) {
        fprintf(stderr, "kafka_mock: cannot start the mock cluster\n");
        return 1;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-t") == 0)
            kafka_mock_topic(cluster, argv[++i]);

    printf("%s\n", rd_kafka_mock_cluster_bootstraps(cluster));
    (void) fflush(stdout);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGUSR1) {
            (void) rd_kafka_mock_broker_set_down(cluster, -1);
            printf("down\n");
        } else if (sig == SIGUSR2) {
            (void) rd_kafka_mock_broker_set_up(cluster, -1);
            printf("up\n");
        } else {
            break;
        }
        (void) fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
    return 0;
}
