from tandem_lm_eval.cli.main import main

main()
