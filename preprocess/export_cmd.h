/* export_cmd.h: the `kiln-preprocess export` subcommand. */
#ifndef PP_EXPORT_CMD_H
#define PP_EXPORT_CMD_H

/* argv[0] is "export". Returns the process exit code. */
int pp_export_main(int argc, char **argv);

#endif
