from lorapack.cli import main

main()
