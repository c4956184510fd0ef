from smsched.cli import main

main()
