/* tokenizer_cmd.h: the `kiln-preprocess tokenizer ...` subcommand. */
#ifndef PP_TOKENIZER_CMD_H
#define PP_TOKENIZER_CMD_H

/* argv[0] is "tokenizer". Returns the process exit code. */
int pp_tokenizer_main(int argc, char **argv);

#endif
