/* lag_cmd.h: the `kiln-preprocess lag` subcommand. */
#ifndef PP_LAG_CMD_H
#define PP_LAG_CMD_H

/* argv[0] is "lag". Returns the process exit code. */
int pp_lag_main(int argc, char **argv);

#endif
