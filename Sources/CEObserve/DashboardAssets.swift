// The dashboard's page, script and style: plain HTML, JavaScript and CSS in
// Sources/CEObserve/Dashboard/ (no build step, nothing fetched from elsewhere). SwiftPM embeds
// them in the binary (`.embedInCode` in Package.swift), so `ce-node` stays one file that a
// container image or a host needs nothing beside.

enum DashboardAssets {
    /// The page; `<!--initial-->` is replaced by the picture of the moment.
    static let indexHTML = String(decoding: PackageResources.index_html, as: UTF8.self)
    static let javaScript = String(decoding: PackageResources.dashboard_js, as: UTF8.self)
    static let css = String(decoding: PackageResources.dashboard_css, as: UTF8.self)
}
