// CENode
