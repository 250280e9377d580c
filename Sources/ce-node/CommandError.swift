/// A command's failure, in sentences a person can act on: printed as "Error: ..." with exit
/// status 1, without the usage text that ArgumentParser adds to a ValidationError.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
