// placeholder: the command table is written next
