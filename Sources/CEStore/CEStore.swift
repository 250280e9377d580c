// CEStore
